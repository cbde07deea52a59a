"""The chart's Grafana dashboard (charts/recop/files/dashboard.json): valid against the
dashboard schema of the Apache-2.0 grafana-foundation-sdk (schema/main.go, built here with
Go and cached), shipped verbatim in a ConfigMap for kube-prometheus-stack's Grafana
sidecar, with panels for what a RecOp operator looks at, all on series RecOp exports."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from devstack.common import cache_dir
from tests.alerts.test_alerts_rules import exported
from tests.test_chart import CHART, render

SCHEMA = Path(__file__).resolve().parent / "schema"
DASHBOARD = CHART / "files" / "dashboard.json"


@cache
def validator() -> Path:
    """The validator binary, built once per version of its sources (Go modules from the
    module proxy into the project's cache)."""
    sources = [*sorted(SCHEMA.glob("*.go")), SCHEMA / "go.mod", SCHEMA / "go.sum"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = cache_dir() / "bin" / f"dashboard-schema-{digest}" / "validate"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found: the dashboard schema check builds with Go", pytrace=False)
    env = {**os.environ, "GOMODCACHE": str(cache_dir() / "gomod"), "GOFLAGS": "-mod=readonly",
           "CGO_ENABLED": "0"}
    result = subprocess.run([go, "build", "-o", str(binary), "."], cwd=SCHEMA, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return binary


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(validator()), str(path)], capture_output=True, text=True,
                          timeout=60)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_dashboard_passes_the_foundation_sdk_schema():
    result = validate(DASHBOARD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_is_strict(tmp_path):
    board = dashboard()
    board["panels"][1]["targets"][0]["exprr"] = "up"
    board["panels"][1]["gridPos"]["w"] = "8"
    del board["schemaVersion"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(board))
    result = validate(broken)
    assert result.returncode == 1
    for complaint in ("unexpected field 'exprr'", "panels[1].gridPos.w",
                      "schemaVersion: required field is missing"):
        assert complaint in result.stdout, result.stdout


def test_config_map_holds_the_file_for_the_grafana_sidecar():
    assert not [d for d in render() if d["kind"] == "ConfigMap"], "on by default"
    [config_map] = [d for d in render("--set", "dashboard.enabled=true",
                                      "--set", "dashboard.namespace=monitoring",
                                      "--set", "dashboard.annotations.grafana_folder=RecOp")
                    if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "RecOp"}
    assert json.loads(config_map["data"]["recop.json"]) == dashboard()


def test_panels_answer_what_operators_ask():
    board = dashboard()
    titles = {p["title"] for p in board["panels"]}
    assert {"Lookup requests", "Lookup latency p50 / p99", "Freshness p50 / p99",
            "Version per shard", "Load progress", "Rollbacks", "Arm traffic",
            "Arm cost"} <= titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in board["panels"])


def test_queries_read_only_series_recop_exports():
    used = set(re.findall(r"\brecop_[a-z_]+", " ".join(queries(dashboard()))))
    assert not used - exported()
