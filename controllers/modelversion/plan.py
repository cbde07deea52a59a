"""The ModelVersion update state machine, pure: observations in, typed actions out.

The drive (controllers/modelversion/drive.py) observes the CR, the embedding servers'
Status per replica and Triton, calls `plan`, has the executor carry out the actions,
writes the status (settle.py), then observes again. Every decision is derived from
what the servers report, not from memory, so an operator restarted at any step takes
the same decision again: a replica already holding the version is not told to load it
twice, a replica already committed is not committed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controllers.modelversion.actions import (
    Action,
    ApplyIncremental,
    Commit,
    Drop,
    Emit,
    GoldenCheck,
    LoadFull,
    Rollback,
    TritonLoad,
)
from recop.api.modelversion import Phase

# States a replica reports for a version (embedding.proto VersionStatus.state).
LOADED = ("ready", "active")
# Error types a server reports for a version whose checkpoint is bad (Status.error is
# "<type>: <message>").
CHECKPOINT_ERRORS = ("ChecksumError", "InvalidValues")
# The status reason of a version held back until a Triton server is ready to load its
# dense version (settle.py clears it once the version moves on).
WAITING_FOR_TRITON = "WaitingForTriton"


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
    """A version as the servers know it: its number and how to build it from S3 (an
    incremental through its base, down to a full checkpoint)."""

    name: str
    number: int
    kind: str  # full | incremental | realtime
    uri: str | None = None
    base: Target | None = None
    dense_version: int | None = None
    golden: bool = False  # a golden set must pass before it commits
    # The value checks the servers run on every row they load: (max |value|, 0 for
    # none; whether NaN/Inf are allowed).
    checks: tuple[float, bool] = (0.0, False)

    def chain(self) -> list[Target]:
        """This version and the bases it is built on."""
        return [self, *(self.base.chain() if self.base else [])]


@dataclass(frozen=True)
class Observed:
    phase: Phase
    me: Target
    shard_count: int
    replicas: list[Replica]
    now: datetime
    previous: Target | None = None  # what serves now / what a rollback restores
    # Dense versions ready, with the spec's model config, on every ready Triton server;
    # None: no Triton server is ready (or the update does not touch Triton).
    triton_versions: frozenset[int] | None = None
    # The model runs Triton pods of its own (Managed, replicas > 0): a dense version waits
    # for one to be ready rather than going Active on none.
    triton_expected: bool = False
    watch_until: datetime | None = None
    breach: str | None = None  # the rollback policy's metric crossed its threshold
    failure: str | None = None  # an action of the last pass failed (commit, Triton smoke)
    failure_reason: str | None = None  # its reason, when more precise than Load/CommitFailed
    golden_passed: bool = False  # status.goldenSet records a passing comparison
    restored: bool = False  # rollback finished (status.completedAt set)


@dataclass
class Step:
    actions: list[Action] = field(default_factory=list)
    phase: Phase | None = None  # new phase, if it changes
    reason: str | None = None
    message: str | None = None
    activate: bool = False  # this version now serves: stamp activatedAt, set the model
    verify: bool = False  # window passed: release the previous version
    restored: bool = False  # rollback complete: stamp completedAt
    done: bool = False  # nothing more to drive for this version
    shards: list[dict] = field(default_factory=list)


def uses_triton(me: Target, previous: Target | None) -> bool:
    """Whether the update touches Triton: a dense version to load, keep or restore."""
    return bool(me.dense_version or (previous and previous.dense_version))


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


def build(replica: Replica, target: Target) -> list[Action] | str:
    """Actions that make `replica` hold `target` (not serve it): the missing links of its
    chain, one per pass, so an incremental's base is loaded before it is applied.
    A string says why it cannot be built."""
    if target.number in replica.versions:
        return []
    if target.kind != "incremental":
        if not target.uri:
            return f"version {target.number} has no checkpoint to load"
        return [LoadFull(replica.key, target.number, target.uri, target.dense_version or 0)]
    base = target.base
    if base is None:
        return f"the base of version {target.number} is unknown"
    state = replica.versions.get(base.number)
    if state == "failed":
        return f"its base version {base.number} failed to load"
    if state in LOADED:
        return [ApplyIncremental(replica.key, target.number, base.number, target.uri,
                                 target.dense_version or 0)]
    if state is not None:
        return []  # the base is still loading
    return build(replica, base)


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
        reason = obs.failure_reason or ("CommitFailed" if committed else "LoadFailed")
        return _fail(obs, reason, obs.failure, step)
    failed = [r for r in obs.replicas if r.versions.get(n) == "failed"]
    if failed:
        r = failed[0]
        error = r.errors.get(n, "")
        # The servers verify checksums and values as they read: those failures are the
        # checkpoint's, not the load's.
        reason = "ValidationFailed" if error.startswith(CHECKPOINT_ERRORS) else "LoadFailed"
        return _fail(obs, reason, f"{r.key} (shard {r.shard}): {error}", step)
    # Phase one: every replica loads the version beside the one it serves (a replica
    # that lacks an incremental's base, one that joined late, builds the base first).
    for r in obs.replicas:
        actions = build(r, me)
        if isinstance(actions, str):
            return _fail(obs, "BaseNotHeld", f"{r.key}: {actions}", step)
        step.actions += actions
    # Loading where servers exist is harmless; committing needs every shard covered.
    problem = coverage_problem(obs.replicas, obs.shard_count)
    if problem:
        step.message = problem
        return step
    if step.actions or any(r.versions.get(n) not in LOADED for r in obs.replicas):
        loaded = sum(1 for r in obs.replicas if r.versions.get(n) in LOADED)
        step.message = f"{loaded}/{len(obs.replicas)} replicas loaded"
        return step
    # The dense version loads (beside the old one) and the golden set passes before any
    # commit, so a version that fails either never serves a lookup.
    if me.dense_version is not None and obs.triton_versions is None and obs.triton_expected:
        step.reason = WAITING_FOR_TRITON
        step.message = (f"waiting for a Triton server to be ready to load dense version "
                        f"{me.dense_version}")
        return step
    if me.dense_version is not None and obs.triton_versions is not None \
            and me.dense_version not in obs.triton_versions:
        keep = obs.previous.dense_version if obs.previous else None
        step.actions = [TritonLoad(me.dense_version, keep)]
        step.message = f"loading dense version {me.dense_version} on Triton"
        return step
    uncommitted = [r for r in obs.replicas if r.active != n]
    if uncommitted and me.golden and not obs.golden_passed:
        step.actions = [GoldenCheck()]
        step.message = "comparing the golden set with the active version"
        return step
    # Phase two only when every replica holds it: no lookup ever meets a shard without it.
    step.actions = [Commit(r.key, n) for r in uncommitted]
    if step.actions:
        step.message = "committing"
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
        step.actions = [Drop(r.key, prev.number) for r in obs.replicas
                        if r.versions.get(prev.number) in LOADED and r.active != prev.number]
        if prev.dense_version and prev.dense_version != obs.me.dense_version \
                and obs.triton_versions is not None and obs.me.dense_version:
            step.actions.append(TritonLoad(obs.me.dense_version))
    return step


def _restore(obs: Observed) -> Step:
    """Bring every replica and Triton back to the previous version, then free this one.

    A previous version still held is re-activated by a Rollback call (no S3 read); a
    replica that lost it (restarted) rebuilds it from S3, its base first; a reload that
    failed (S3 down) is dropped and tried again.
    """
    if obs.restored:
        return Step(done=True)
    prev, n = obs.previous, obs.me.number
    step = Step()
    if prev is not None:
        for r in obs.replicas:
            if r.versions.get(prev.number) == "failed":
                step.actions.append(Drop(r.key, prev.number))
                continue
            actions = build(r, prev)
            if isinstance(actions, str):
                step.message = f"{r.key} lost version {prev.number}: {actions}"
                return step
            step.actions += actions
        if step.actions or any(r.versions.get(prev.number) not in LOADED
                               for r in obs.replicas):
            step.message = f"reloading version {prev.number}"
            return step
        step.actions = [Rollback(r.key, prev.number) for r in obs.replicas
                        if r.active != prev.number and r.versions.get(prev.number) in LOADED]
        if step.actions:
            step.message = f"restoring version {prev.number}"
            return step
        # Only the previous dense version may stay: Triton serves the newest loaded one
        # to requests that name no version.
        if prev.dense_version and obs.triton_versions is not None \
                and obs.triton_versions != {prev.dense_version}:
            step.actions = [TritonLoad(prev.dense_version)]
            return step
    # Nothing serves this version any more: free it where it is held.
    step.actions = [Drop(r.key, n) for r in obs.replicas
                    if n in r.versions and r.versions[n] != "loading" and r.active != n]
    if n and any(r.versions.get(n) == "loading" for r in obs.replicas):
        step.message = "waiting for a load to end before freeing it"
        return step
    step.restored, step.done = True, True
    return step


def catch_up_step(replicas: list[Replica], active: Target, release: bool,
                  triton: Mapping[str, frozenset[int]] | None = None,
                  keep: int | None = None) -> Step:
    """Bring every replica that does not serve the settled active version (it joined
    late, restarted empty, or missed a commit) to it: build it from S3, then commit.

    With `release` (the version passed its window) the bases it was built from are freed.
    `triton`: the dense versions each ready Triton server holds with the spec's config;
    `keep`: the previous dense version, which may stay loaded until the window passes.
    """
    step = Step()
    n = active.number
    chain = [t.number for t in active.chain()[1:]]
    for r in replicas:
        state = r.versions.get(n)
        if r.active == n:
            if release:
                step.actions += [Drop(r.key, b) for b in chain if r.versions.get(b) in LOADED]
        elif state in LOADED:
            step.actions.append(Commit(r.key, n, announce=Emit(
                "ReplicaCaughtUp", f"{r.key} (shard {r.shard}) now serves {active.name}")))
        elif state == "failed":
            step.actions.append(Drop(r.key, n))  # tried again on the next pass
        else:
            actions = build(r, active)
            if isinstance(actions, str):
                step.message = f"{r.key}: {actions}"
            else:
                step.actions += actions
    dense = triton_behind(triton or {}, active.dense_version, None if release else keep)
    step.actions += [TritonLoad(active.dense_version, server=s) for s in dense]
    behind = [r for r in replicas if r.active != n]
    step.done = not step.actions and not behind
    if behind:
        step.message = step.message or f"{len(behind)} replica(s) catching up to version {n}"
    elif dense:
        step.message = f"{len(dense)} Triton server(s) loading dense version {active.dense_version}"
    return step


def triton_behind(servers: Mapping[str, frozenset[int]], dense: int | None,
                  keep: int | None) -> list[str]:
    """Ready Triton servers that do not serve `dense` with the spec's config: one that
    started after it was loaded (a new replica, a restarted pod) serves the repository's
    default version and config. Besides `dense`, only `keep` may be loaded: Triton
    answers a request that names no version with the newest one it holds."""
    if dense is None:
        return []
    allowed = {dense, keep} - {None}
    return sorted(s for s, ready in servers.items() if dense not in ready or ready - allowed)
