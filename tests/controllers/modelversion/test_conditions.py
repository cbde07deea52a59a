"""A version's Ready, Succeeded and Failed conditions follow its phase."""

from __future__ import annotations

from datetime import UTC, datetime

from controllers.modelversion.conditions import with_lifecycle
from recop.api.modelversion import ModelVersionStatus, Phase

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def _conditions(status, kind="full", generation=1):
    new = with_lifecycle(status, kind, generation)
    return {c.type: (c.status.value, c.reason) for c in new.conditions}, new


def test_a_loading_version_is_neither_ready_nor_done():
    got, new = _conditions(ModelVersionStatus(phase=Phase.LOADING, message="3/4 shards"))
    assert got == {"Ready": ("False", "Loading"), "Succeeded": ("False", "Loading"),
                   "Failed": ("False", "Loading")}
    assert new.observed_generation == 1
    assert all(c.observed_generation == 1 for c in new.conditions)


def test_an_active_version_is_ready_and_succeeds_once_its_window_passed():
    got, _ = _conditions(ModelVersionStatus(phase=Phase.ACTIVE))
    assert got["Ready"] == ("True", "Active") and got["Succeeded"][0] == "False"
    got, _ = _conditions(ModelVersionStatus(phase=Phase.ACTIVE, verified_at=NOW))
    assert got["Succeeded"] == ("True", "Verified") and got["Failed"][0] == "False"
    got, _ = _conditions(ModelVersionStatus(phase=Phase.SUPERSEDED, verified_at=NOW))
    assert got["Ready"] == ("False", "Superseded") and got["Succeeded"] == ("True", "Verified")


def test_a_refused_or_rolled_back_version_failed_with_its_reason():
    got, new = _conditions(ModelVersionStatus(
        phase=Phase.FAILED, reason="ValidationFailed", message="table t: NaN"))
    assert got["Failed"] == ("True", "ValidationFailed")
    assert got["Ready"] == ("False", "ValidationFailed") and got["Succeeded"][0] == "False"
    assert next(c for c in new.conditions if c.type == "Failed").message == "table t: NaN"
    got, _ = _conditions(ModelVersionStatus(
        phase=Phase.ROLLED_BACK, reason="MetricBreach", verified_at=None))
    assert got["Failed"] == ("True", "MetricBreach") and got["Succeeded"][0] == "False"


def test_a_realtime_version_succeeds_when_a_newer_version_takes_over():
    got, _ = _conditions(ModelVersionStatus(phase=Phase.ACTIVE), "realtime")
    assert got["Ready"][0] == "True" and got["Succeeded"][0] == "False"
    got, _ = _conditions(ModelVersionStatus(phase=Phase.SUPERSEDED), "realtime")
    assert got["Succeeded"] == ("True", "Superseded") and got["Ready"][0] == "False"


def test_the_conditions_are_stable_so_an_unchanged_status_is_not_rewritten():
    _, first = _conditions(ModelVersionStatus(phase=Phase.ACTIVE))
    _, again = _conditions(first)
    assert again.to_wire() == first.to_wire()
    _, later = _conditions(first.model_copy(update={"phase": Phase.SUPERSEDED}))
    ready = {c.type: c for c in later.conditions}["Ready"]
    assert ready.status.value == "False" and ready.last_transition_time is not None
