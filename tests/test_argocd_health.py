"""docs/argocd-health.lua, run by a real Lua 5.1 (the dialect of Argo CD's gopher-lua)
against statuses the RecModel controller actually writes and the phases the API defines.

Needs `lua5.1` (Debian package lua5.1); missing, the tests fail and say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from controllers.recmodel.status import summarize
from recop.api.abtest import ABTestStatus
from recop.api.common import Condition, ConditionStatus
from recop.api.modelversion import ModelVersionStatus
from recop.api.recmodel import Phase, RecModelSpec, RecModelStatus
from tests.examples import EXAMPLES

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "argocd-health.lua"
GENERATION = 3


def lua_literal(value) -> str:
    """A Python value (decoded JSON) as a Lua table constructor."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "nil"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def health(kind: str, status: dict | None, generation: int = GENERATION) -> tuple[str, str]:
    lua = shutil.which("lua5.1")
    if lua is None:
        pytest.fail("lua5.1 is not installed: `apt-get install lua5.1` (Debian)", pytrace=False)
    obj = {"apiVersion": "serving.recop.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "x", "namespace": "ns", "generation": generation}}
    if status is not None:
        obj["status"] = status
    harness = (f"obj = {lua_literal(obj)}\n"
               f"local hs = dofile({lua_literal(str(SCRIPT))})\n"
               "io.write(hs.status, '\\n', hs.message)\n")
    out = subprocess.run([lua, "-"], input=harness, capture_output=True, text=True,
                         check=True, timeout=10).stdout
    state, message = out.split("\n", 1)
    return state, message


def recmodel_status(shard_ready: list[int], triton_ready: int, previous: Phase,
                    refusal: str | None = None) -> dict:
    doc = yaml.safe_load((EXAMPLES / "valid" / "recmodel.yaml").read_text())
    spec = RecModelSpec.model_validate(doc["spec"])
    status = summarize(spec, "ctr-ranker", "recsys", GENERATION, shard_ready, triton_ready,
                       RecModelStatus(phase=previous, ready_generation=GENERATION
                                      if previous == Phase.READY else None), refusal)
    return status.to_wire()


def test_recmodel_statuses_from_the_controller():
    assert health("RecModel", recmodel_status([2] * 8, 2, Phase.PENDING))[0] == "Healthy"
    state, message = health("RecModel", recmodel_status([2] * 8, 0, Phase.PENDING))
    assert state == "Progressing" and "triton 0/2" in message
    state, message = health("RecModel", recmodel_status([2] * 7 + [1], 2, Phase.READY))
    assert state == "Degraded" and "shard 7 1/2" in message
    state, message = health("RecModel", recmodel_status([0] * 8, 0, Phase.PENDING,
                                                        refusal="no node can hold a shard"))
    assert state == "Degraded" and "no node can hold a shard" in message


def test_no_status_or_a_stale_one_is_progressing():
    assert health("RecModel", None)[0] == "Progressing"
    ready = recmodel_status([2] * 8, 2, Phase.PENDING)
    state, message = health("RecModel", ready, generation=GENERATION + 1)
    assert state == "Progressing" and f"generation {GENERATION + 1}" in message


def _conditions(**statuses: bool) -> list[Condition]:
    return [Condition(type=kind, status=ConditionStatus.TRUE if value else ConditionStatus.FALSE,
                      reason="Test", message=f"{kind} is {value}",
                      observed_generation=GENERATION) for kind, value in statuses.items()]


@pytest.mark.parametrize(("phase", "expected"), [
    ("Pending", "Progressing"), ("Validating", "Progressing"), ("Loading", "Progressing"),
    ("Active", "Healthy"), ("Superseded", "Healthy"),
    ("Failed", "Degraded"), ("RolledBack", "Degraded"),
])
def test_modelversion_phases(phase, expected):
    conditions = _conditions(Ready=phase == "Active", Degraded=expected == "Degraded")
    status = ModelVersionStatus(phase=phase, observed_generation=GENERATION,
                                conditions=conditions).to_wire()
    assert health("ModelVersion", status)[0] == expected


@pytest.mark.parametrize(("phase", "expected"), [
    ("Pending", "Progressing"), ("Ramping", "Progressing"), ("Running", "Healthy"),
    ("Concluded", "Healthy"), ("Stopped", "Suspended"), ("Failed", "Degraded"),
])
def test_abtest_phases(phase, expected):
    status = ABTestStatus(phase=phase, observed_generation=GENERATION,
                          conditions=_conditions(Ready=expected == "Healthy")).to_wire()
    assert health("ABTest", status)[0] == expected


def test_a_degraded_condition_of_an_older_generation_does_not_count():
    conditions = [c.model_copy(update={"observed_generation": GENERATION - 1})
                  for c in _conditions(Degraded=True)] + _conditions(Ready=True)
    status = ABTestStatus(phase="Running", observed_generation=GENERATION,
                          conditions=conditions).to_wire()
    assert health("ABTest", status)[0] == "Healthy"
