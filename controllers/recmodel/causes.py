"""Why a model's replicas are not ready, pure: read from its pods (a container OOM-killed,
crash-looping, refused its config or its image; a pod no node takes) and from its
versions (the newest one failed while none serves). Without these the status of a shard
with no ready replica says only that it waits, and the reason is left in `kubectl
describe pod`, the server's log or the ModelVersion."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    reason: str  # CamelCase, for the condition and the Event: OOMKilled, VersionFailed, ...
    message: str


# Waiting reasons of a container that waiting longer does not cure.
STUCK = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
                   "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                   "InvalidImageName", "RunContainerError"})


def pod_causes(pods: list[dict]) -> list[Cause]:
    """One cause per container that is not ready for a reason of its own, OOM kills
    first (the kubelet keeps the last termination in lastState after a restart)."""
    ooms, others = [], []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        unschedulable = next((c for c in status.get("conditions") or []
                              if c.get("type") == "PodScheduled" and c.get("status") == "False"),
                             None)
        if unschedulable is not None:
            others.append(Cause("Unschedulable", _with(f"pod {name} cannot be scheduled",
                                                        unschedulable.get("message"))))
            continue
        limits = {c["name"]: ((c.get("resources") or {}).get("limits") or {}).get("memory")
                  for c in (pod.get("spec") or {}).get("containers") or []}
        for container in status.get("containerStatuses") or []:
            if container.get("ready"):
                continue
            cause = _container_cause(name, container, limits.get(container["name"]))
            if cause is not None:
                (ooms if cause.reason == "OOMKilled" else others).append(cause)
    return ooms + others


def _container_cause(pod: str, container: dict, limit: str | None) -> Cause | None:
    state, last = container.get("state") or {}, container.get("lastState") or {}
    terminated = state.get("terminated") or last.get("terminated") or {}
    restarts = container.get("restartCount", 0)
    where = f"pod {pod}: container {container['name']}"
    if terminated.get("reason") == "OOMKilled":
        at = f" at its memory limit of {limit}" if limit else ""
        return Cause("OOMKilled", f"{where} was OOM-killed{at} ({restarts} restart(s)): "
                     "it needs more memory than the spec gives it (a checkpoint with more "
                     "rows than spec.tables says is one way)")
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in STUCK:
        text = _with(f"{where} {waiting['reason']}", waiting.get("message"))
        if terminated:
            text += (f" (last exit: {terminated.get('reason', 'Error')}, code "
                     f"{terminated.get('exitCode')})")
        return Cause(waiting["reason"], text)
    return None


def version_cause(versions: list[dict], model: str, active: str | None) -> Cause | None:
    """The newest ModelVersion of `model` failed (or rolled back) and no version serves:
    the servers are up but have nothing to serve, and this is why."""
    if active:
        return None
    mine = [v for v in versions if (v.get("spec") or {}).get("model") == model
            and v["spec"].get("kind") != "realtime"]
    if not mine:
        return None
    newest = max(mine, key=lambda v: (v["metadata"].get("creationTimestamp", ""),
                                      v["metadata"]["name"]))
    status = newest.get("status") or {}
    if status.get("phase") not in ("Failed", "RolledBack"):
        return None
    reason = f" ({status['reason']})" if status.get("reason") else ""
    return Cause("VersionFailed", _with(f"no version serves: ModelVersion "
                                        f"{newest['metadata']['name']} {status['phase']}{reason}",
                                        status.get("message")))


def _with(text: str, detail: str | None) -> str:
    return f"{text}: {detail}" if detail else text
