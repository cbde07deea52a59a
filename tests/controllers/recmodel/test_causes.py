"""Why replicas are not ready, from pods and versions, and how the status tells it."""

from __future__ import annotations

from controllers.recmodel.causes import Cause, pod_causes, version_cause
from controllers.recmodel.status import summarize
from recop.api.recmodel import Phase, RecModelSpec, RecModelStatus


def pod(name: str, *, ready: bool = False, state: dict | None = None,
        last: dict | None = None, restarts: int = 0, conditions: list | None = None,
        deleting: bool = False) -> dict:
    meta = {"name": name} | ({"deletionTimestamp": "2026-12-02T07:00:00Z"} if deleting else {})
    status: dict = {"conditions": conditions or []}
    if state is not None or ready:
        status["containerStatuses"] = [{"name": "server", "ready": ready,
                                        "restartCount": restarts, "state": state or {},
                                        "lastState": last or {}}]
    return {"metadata": meta, "status": status,
            "spec": {"containers": [{"name": "server",
                                     "resources": {"limits": {"memory": "300Mi"}}}]}}


OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
RUNNING = {"running": {"startedAt": "2026-12-02T07:00:00Z"}}


def test_an_oom_kill_is_told_with_the_limit_even_after_the_restart():
    causes = pod_causes([pod("m-emb-0-a", state=RUNNING, last=OOM, restarts=2)])
    assert [c.reason for c in causes] == ["OOMKilled"]
    assert causes[0].message.startswith(
        "pod m-emb-0-a: container server was OOM-killed at its memory limit of 300Mi "
        "(2 restart(s))")


def test_oom_kills_come_first_then_stuck_containers_then_unschedulable_pods():
    crash = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}
    pods = [pod("a", state=crash, last={"terminated": {"reason": "Error", "exitCode": 1}}),
            pod("b", state=OOM),
            pod("c", conditions=[{"type": "PodScheduled", "status": "False",
                                  "reason": "Unschedulable", "message": "0/3 nodes fit"}])]
    causes = pod_causes(pods)
    assert [c.reason for c in causes] == ["OOMKilled", "CrashLoopBackOff", "Unschedulable"]
    assert causes[1].message == ("pod a: container server CrashLoopBackOff: back-off 20s "
                                 "(last exit: Error, code 1)")
    assert causes[2].message == "pod c cannot be scheduled: 0/3 nodes fit"


def test_ready_starting_and_terminating_pods_have_no_cause():
    config = {"waiting": {"reason": "CreateContainerConfigError",
                          "message": 'secret "s3" not found'}}
    assert pod_causes([pod("ready", ready=True, state=RUNNING, last=OOM),
                       pod("starting", state={"waiting": {"reason": "ContainerCreating"}}),
                       pod("loading", state=RUNNING),
                       pod("gone", state=config, deleting=True)]) == []
    assert pod_causes([pod("cfg", state=config)]) == [Cause(
        "CreateContainerConfigError",
        'pod cfg: container server CreateContainerConfigError: secret "s3" not found')]


def version(name: str, created: str, phase: str, model: str = "m", **status) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"model": model, "kind": "full"},
            "status": {"phase": phase, **status}}


def test_the_newest_failed_version_is_the_cause_while_none_serves():
    versions = [version("v1", "2026-12-02T07:00:00Z", "Failed", reason="LoadFailed"),
                version("v2", "2026-12-02T07:01:00Z", "Failed", reason="ValidationFailed",
                        message="crc32 mismatch"),
                version("x", "2026-12-02T07:02:00Z", "Loading", model="other")]
    cause = version_cause(versions, "m", None)
    assert cause == Cause("VersionFailed", "no version serves: ModelVersion v2 Failed "
                          "(ValidationFailed): crc32 mismatch")
    assert version_cause(versions, "m", "v0") is None  # a version serves: not the cause
    assert version_cause(versions, "other", None) is None  # still loading
    assert version_cause([], "m", None) is None


def spec(replicas: int = 1) -> RecModelSpec:
    return RecModelSpec.model_validate({
        "tables": [{"name": "user", "dimension": 16, "rows": 1000}],
        "sharding": {"shards": 2, "replicasPerShard": replicas},
        "embeddingServer": {"image": "emb:1"},
        "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                  "instanceGroups": [{"kind": "KIND_CPU"}]},
        "storage": {"bucket": "models"}})


def test_the_status_names_the_first_cause_and_tells_them_all():
    causes = [Cause("OOMKilled", "pod a was OOM-killed"), Cause("VersionFailed", "v2 failed")]
    status = summarize(spec(), "m", "ns", 1, [0, 1], 0, RecModelStatus(), None, causes=causes)
    ready = {c.type: c for c in status.conditions}["Ready"]
    assert status.phase == Phase.PROGRESSING
    assert ready.reason == "OOMKilled"
    assert ready.message == ("waiting for ready replicas: shard 0 0/1; pod a was OOM-killed; "
                             "v2 failed")
    assert status.conditions_message("Progressing") == ready.message


def test_a_degraded_model_names_the_cause_and_a_complete_one_ignores_it():
    causes = [Cause("CrashLoopBackOff", "pod b crash-loops")]
    ready = summarize(spec(2), "m", "ns", 1, [2, 2], 0, RecModelStatus(), None)
    degraded = summarize(spec(2), "m", "ns", 1, [2, 1], 0, ready, None, causes=causes)
    assert degraded.phase == Phase.DEGRADED
    condition = {c.type: c for c in degraded.conditions}["Degraded"]
    assert condition.reason == "CrashLoopBackOff"
    assert condition.message == "waiting for ready replicas: shard 1 1/2; pod b crash-loops"
    # Serving on every shard still: Ready says so, the cause is in Degraded.
    assert degraded.conditions_message("Ready").startswith("every shard")
    assert summarize(spec(2), "m", "ns", 1, [2, 2], 0, ready, None,
                     causes=causes).phase == Phase.READY


def test_a_refusal_keeps_its_own_reason():
    status = summarize(spec(), "m", "ns", 1, [0, 0], 0, RecModelStatus(), "limit too low",
                       refusal_reason="MemoryLimitTooLow",
                       causes=[Cause("OOMKilled", "pod a was OOM-killed")])
    degraded = {c.type: c for c in status.conditions}["Degraded"]
    assert status.phase == Phase.FAILED
    assert (degraded.reason, degraded.message) == ("MemoryLimitTooLow", "limit too low")
