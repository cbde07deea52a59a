"""The ModelVersion update state machine, pure: observations in, actions and status out.

The I/O layer (controllers/modelversion.py) observes the CR, the embedding servers'
Status per replica and Triton, calls `plan`, executes the actions and writes the status,
then observes again. Every decision is derived from what the servers report, not from
memory, so an operator restarted at any step takes the same decision again: a replica
already holding the version is not told to load it twice, a replica already committed is
not committed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from recop.api.modelversion import Phase

# States a replica reports for a version (embedding.proto VersionStatus.state).
LOADED = ("ready", "active")


@dataclass(frozen=True)
class Replica:
    key: str  # host:adminPort
    shard: int
    active: int
    versions: dict[int, str]  # number -> loading|ready|active|failed
    progress: dict[int, float] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A version as the servers know it: its number and how to build it from S3."""

    name: str
    number: int
    kind: str  # full | incremental | realtime
    uri: str | None = None
    base_number: int | None = None
    dense_version: int | None = None


@dataclass(frozen=True)
class Observed:
    phase: Phase
    me: Target
    shard_count: int
    replicas: list[Replica]
    now: datetime
    previous: Target | None = None  # what serves now / what a rollback restores
    triton_versions: frozenset[int] | None = None  # ready dense versions; None: no Triton
    watch_until: datetime | None = None
    breach: str | None = None  # the rollback policy's metric crossed its threshold
    failure: str | None = None  # an action of the last pass failed (commit, Triton smoke)
    restored: bool = False  # rollback finished (status.completedAt set)


@dataclass
class Step:
    actions: list[tuple] = field(default_factory=list)
    phase: Phase | None = None  # new phase, if it changes
    reason: str | None = None
    message: str | None = None
    activate: bool = False  # this version now serves: stamp activatedAt, set the model
    verify: bool = False  # window passed: release the previous version
    restored: bool = False  # rollback complete: stamp completedAt
    done: bool = False  # nothing more to drive for this version
    shards: list[dict] = field(default_factory=list)


def coverage_problem(replicas: list[Replica], shard_count: int) -> str | None:
    missing = sorted(set(range(shard_count)) - {r.shard for r in replicas})
    return f"no embedding server registered for shard(s) {missing}" if missing else None


def shard_progress(replicas: list[Replica], number: int) -> list[dict]:
    """status.shards entries for `number` on every replica."""
    out = []
    for r in sorted(replicas, key=lambda r: (r.shard, r.key)):
        state = r.versions.get(number)
        label = ("Committed" if r.active == number else "Loaded" if state in LOADED
                 else "Failed" if state == "failed" else "Loading" if state == "loading"
                 else "Pending")
        fraction = 1.0 if state in LOADED else r.progress.get(number, 0.0)
        out.append({"shard": r.shard, "replica": r.key, "state": label,
                    "fraction": round(min(max(fraction, 0.0), 1.0), 4)})
    return out


def plan(obs: Observed) -> Step:
    if obs.phase in (Phase.FAILED, Phase.ROLLED_BACK):
        return _restore(obs)
    if obs.phase == Phase.LOADING:
        return _rollout(obs)
    if obs.phase == Phase.ACTIVE:
        return _watch(obs)
    return Step(done=obs.phase == Phase.SUPERSEDED)


def _rollout(obs: Observed) -> Step:
    me, n = obs.me, obs.me.number
    step = Step(shards=shard_progress(obs.replicas, n))
    committed = any(r.active == n for r in obs.replicas)
    if obs.failure:
        return _fail(obs, "CommitFailed" if committed else "LoadFailed", obs.failure, step)
    failed = [r for r in obs.replicas if r.versions.get(n) == "failed"]
    if failed:
        r = failed[0]
        return _fail(obs, "LoadFailed", f"{r.key} (shard {r.shard}): {r.errors.get(n, '')}",
                     step)
    # Phase one: every replica loads the version beside the one it serves.
    for r in obs.replicas:
        if n not in r.versions:
            if me.kind == "incremental":
                if me.base_number not in r.versions:
                    return _fail(obs, "BaseNotHeld", f"{r.key} does not hold base version "
                                 f"{me.base_number}", step)
                step.actions.append(("apply_incremental", r.key, n, me.base_number, me.uri))
            else:
                step.actions.append(("load_full", r.key, n, me.uri))
    # Loading where servers exist is harmless; committing needs every shard covered.
    problem = coverage_problem(obs.replicas, obs.shard_count)
    if problem:
        step.message = problem
        return step
    if step.actions or any(r.versions.get(n) not in LOADED for r in obs.replicas):
        loaded = sum(1 for r in obs.replicas if r.versions.get(n) in LOADED)
        step.message = f"{loaded}/{len(obs.replicas)} replicas loaded"
        return step
    # Phase two only when every replica holds it: no lookup ever meets a shard without it.
    step.actions = [("commit", r.key, n) for r in obs.replicas if r.active != n]
    if step.actions:
        step.message = "committing"
        return step
    if me.dense_version is not None and obs.triton_versions is not None \
            and me.dense_version not in obs.triton_versions:
        keep = obs.previous.dense_version if obs.previous else None
        step.actions = [("triton_load", me.dense_version, keep)]
        step.message = f"loading dense version {me.dense_version} on Triton"
        return step
    step.phase, step.activate, step.reason = Phase.ACTIVE, True, "Committed"
    step.message = f"version {n} serves on {len(obs.replicas)} replicas"
    return step


def _fail(obs: Observed, reason: str, message: str, step: Step) -> Step:
    """A version that never served on any replica Failed; one that served RolledBack."""
    committed = any(r.active == obs.me.number for r in obs.replicas) or reason == "CommitFailed"
    step.actions = []
    step.phase = Phase.ROLLED_BACK if committed else Phase.FAILED
    step.reason, step.message = reason, message
    return step


def _watch(obs: Observed) -> Step:
    if obs.breach:
        return Step(phase=Phase.ROLLED_BACK, reason="MetricBreach", message=obs.breach)
    if obs.watch_until is not None and obs.now < obs.watch_until:
        left = (obs.watch_until - obs.now) / timedelta(seconds=1)
        return Step(message=f"watching live metrics for {left:.0f}s more")
    # Clean: release the previous version (its memory on every replica, its Triton version).
    step = Step(verify=True, done=True, reason="Verified",
                message="the rollback window passed without a breach")
    prev = obs.previous
    if prev is not None and prev.number != obs.me.number:
        step.actions = [("drop", r.key, prev.number) for r in obs.replicas
                        if r.versions.get(prev.number) in LOADED and r.active != prev.number]
        if prev.dense_version and prev.dense_version != obs.me.dense_version \
                and obs.triton_versions is not None and obs.me.dense_version:
            step.actions.append(("triton_load", obs.me.dense_version, None))
    return step


def _restore(obs: Observed) -> Step:
    """Bring every replica and Triton back to the previous version, then free this one.

    A previous version still held is re-activated by a Rollback call (no S3 read); a
    replica that lost it (restarted) reloads it when it was a full checkpoint.
    """
    if obs.restored:
        return Step(done=True)
    prev, n = obs.previous, obs.me.number
    step = Step()
    if prev is not None:
        missing = [r for r in obs.replicas if prev.number not in r.versions]
        for r in missing:
            if prev.kind != "full" or not prev.uri:
                step.message = (f"{r.key} lost version {prev.number} and it cannot be "
                                "reloaded alone (not a full checkpoint)")
                return step
            step.actions.append(("load_full", r.key, prev.number, prev.uri))
        if step.actions or any(r.versions.get(prev.number) == "loading" for r in obs.replicas):
            step.message = f"reloading version {prev.number}"
            return step
        step.actions = [("rollback", r.key, prev.number) for r in obs.replicas
                        if r.active != prev.number and r.versions.get(prev.number) in LOADED]
        if step.actions:
            step.message = f"restoring version {prev.number}"
            return step
        # Only the previous dense version may stay: Triton serves the newest loaded one
        # to requests that name no version.
        if prev.dense_version and obs.triton_versions is not None \
                and obs.triton_versions != {prev.dense_version}:
            step.actions = [("triton_load", prev.dense_version, None)]
            return step
    # Nothing serves this version any more: free it where it is held.
    step.actions = [("drop", r.key, n) for r in obs.replicas
                    if n in r.versions and r.versions[n] != "loading" and r.active != n]
    if n and any(r.versions.get(n) == "loading" for r in obs.replicas):
        step.message = "waiting for a load to end before freeing it"
        return step
    step.restored, step.done = True, True
    return step


def queue_blocker(me: dict, others: list[dict]) -> str | None:
    """The oldest ModelVersion of the same model, created before `me`, still in flight.

    The queue is the API's creation order, not memory, so it survives restarts.
    """
    def key(obj):
        return (obj["metadata"]["creationTimestamp"], obj["metadata"]["name"])

    def in_flight(obj) -> bool:
        status = obj.get("status") or {}
        phase = status.get("phase", Phase.PENDING.value)
        # An Active version still in its rollback window holds the queue too: a newer
        # version must not land before the metrics cleared (or condemned) this one.
        return phase in ("Pending", "Validating", "Loading") or (
            phase == "Active" and not status.get("verifiedAt"))

    earlier = sorted((o for o in others
                      if key(o) < key(me) and o["spec"]["model"] == me["spec"]["model"]
                      and o["spec"]["kind"] != "realtime" and in_flight(o)), key=key)
    return earlier[0]["metadata"]["name"] if earlier else None


def realtime_problem(reports: list[dict], previous: dict | None, max_lag_seconds: float,
                     malformed_ratio: float = 0.1) -> str | None:
    """Why a stream is Degraded, from replicas' realtime reports (and the last pass's)."""
    if not reports:
        return "no embedding server reports the stream"
    if not all(r["enabled"] for r in reports):
        return "a server is not configured with the stream"
    worst = max(r["freshness_p99_seconds"] for r in reports)
    if worst > max_lag_seconds:
        return f"freshness p99 {worst:.1f}s exceeds {max_lag_seconds:.0f}s"
    applied = sum(r["applied"] for r in reports)
    malformed = sum(r["malformed"] for r in reports)
    if previous is not None:
        d_applied = applied - previous["applied"]
        d_malformed = malformed - previous["malformed"]
        if d_malformed > 0 and d_malformed > malformed_ratio * max(d_applied + d_malformed, 1):
            return f"{d_malformed} malformed messages of {d_applied + d_malformed} recently"
        if d_applied == 0 and max(r["lag"] for r in reports) > 0:
            return "stalled: lag is growing while nothing is applied"
    return None
