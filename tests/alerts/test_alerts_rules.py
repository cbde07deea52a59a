"""The chart's alerting rules (charts/recop/files/alerts.yaml): valid for promtool, every
rule unit-tested by `promtool test rules`, the PrometheusRule template renders exactly the
plain file, and every series a rule reads is one a RecOp component exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from controllers.common import metrics as operator_metrics
from embedding.metrics import ServerMetrics
from tests.test_chart import CHART, render

HERE = Path(__file__).resolve().parent
RULES = CHART / "files" / "alerts.yaml"
UNIT_TESTS = HERE / "alerts_test.yaml"


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run scripts/install-system-deps", pytrace=False)
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                            cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alerts(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check():
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", str(RULES))


def test_rules_pass_their_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", str(UNIT_TESTS))


def test_every_rule_is_shown_firing_and_silent():
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [c for t in tests for c in t["alert_rule_test"]]
    for rule in alerts(yaml.safe_load(RULES.read_text())):
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown silent"


def test_prometheus_rule_is_the_plain_file(tmp_path):
    assert not [d for d in render() if d["kind"] == "PrometheusRule"], "on by default"
    [rule] = [d for d in render("--set", "alerts.prometheusRule.enabled=true",
                                "--set", "alerts.prometheusRule.labels.release=kps")
              if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    promtool("check", "rules", str(rendered))


def exported() -> set[str]:
    """Series names (with their _total, _bucket, ... suffixes) of the embedding servers'
    registry and the operator's (the default registry, where controllers/common/metrics
    defines its metrics)."""
    assert operator_metrics.INFO  # imported for its metrics in the default registry
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"],
                "summary": ["_count", "_sum"]}
    names = set()
    for registry in (ServerMetrics(0).registry, REGISTRY):
        for family in registry.collect():
            names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_rules_read_only_series_recop_exports():
    exprs = " ".join(r["expr"] for r in alerts(yaml.safe_load(RULES.read_text())))
    used = set(re.findall(r"\brecop_[a-z_]+", exprs))
    assert not used - exported()
