"""Settings read once (operator/settings.py) and handed to the controllers, which never
read the environment themselves."""

from __future__ import annotations

import re
from pathlib import Path

import kopf

from controllers.common.settings import Settings, settings_of
from recop_operator import settings

CONTROLLERS = Path(__file__).resolve().parents[3] / "controllers"


def test_the_environment_is_read_into_typed_settings():
    config = settings.load({"RECOP_PROMETHEUS_URL": "http://prom:9090",
                            "RECOP_METRICS_PORT": "0", "RECOP_METRICS_ADDR": "127.0.0.1",
                            "RECOP_ABTEST_INTERVAL": "2", "POD_NAMESPACE": "recop-system",
                            "POD_NAME": "recop-7d9-abc"})
    assert config.controllers == Settings(prometheus_url="http://prom:9090",
                                          operator_namespace="recop-system",
                                          abtest_interval=2.0)
    assert (config.metrics_port, config.metrics_addr) == (0, "127.0.0.1")
    assert 1 <= config.pod_priority <= 10_000
    assert config.pod_priority != settings.load({"POD_NAME": "recop-7d9-xyz"}).pod_priority


def test_defaults_and_the_flag_over_the_environment():
    config = settings.load({"RECOP_PROMETHEUS_URL": ""})
    assert config.controllers.prometheus_url is None
    assert config.controllers.abtest_interval == 30.0
    assert (config.metrics_port, config.metrics_addr) == (8080, "0.0.0.0")
    flagged = settings.load({"RECOP_PROMETHEUS_URL": "http://env"}, prometheus_url="http://flag")
    assert flagged.controllers.prometheus_url == "http://flag"


def test_handlers_find_the_settings_in_their_memo():
    assert settings_of(kopf.Memo(settings=Settings(prometheus_url="http://p"))).prometheus_url \
        == "http://p"


def test_no_controller_reads_the_environment():
    readers = [f"{p.relative_to(CONTROLLERS.parent)}:{n}"
               for p in sorted(CONTROLLERS.rglob("*.py"))
               for n, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"\bos\.environ\b|\bgetenv\(|\bfrom os import", line)]
    assert readers == []
