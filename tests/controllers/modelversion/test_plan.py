"""The ModelVersion state machine, step by step and after a restart at any step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controllers.modelversion.actions import (
    ApplyIncremental,
    Commit,
    Drop,
    GoldenCheck,
    LoadFull,
    Rollback,
    TritonLoad,
)
from controllers.modelversion.plan import (
    WAITING_FOR_TRITON,
    Observed,
    Replica,
    Target,
    catch_up_step,
    plan,
)
from recop.api.modelversion import Phase

NOW = datetime(2026, 11, 23, tzinfo=UTC)
OLD = Target("v1", 1, "full", "s3://b/v1", dense_version=1)
NEW = Target("v2", 2, "full", "s3://b/v2", dense_version=2)


def replicas(versions: dict[int, str], active: int = 1, shards: int = 2) -> list[Replica]:
    return [Replica(f"r{s}", s, active, dict(versions)) for s in range(shards)]


def obs(phase=Phase.LOADING, reps=None, me=NEW, **kw) -> Observed:
    return Observed(phase=phase, me=me, shard_count=2, now=NOW, previous=OLD,
                    replicas=replicas({1: "active"}) if reps is None else reps, **kw)


def test_full_update_loads_everywhere_before_any_commit():
    step = plan(obs())
    assert step.actions == [LoadFull("r0", 2, "s3://b/v2", 2), LoadFull("r1", 2, "s3://b/v2", 2)]
    half = [Replica("r0", 0, 1, {1: "active", 2: "ready"}),
            Replica("r1", 1, 1, {1: "active", 2: "loading"}, progress={2: 0.5})]
    step = plan(obs(reps=half))
    assert step.actions == [] and step.phase is None
    assert [s["state"] for s in step.shards] == ["Loaded", "Loading"]
    assert step.shards[1]["fraction"] == 0.5


def test_triton_then_golden_set_then_commit_then_active():
    loaded = replicas({1: "active", 2: "ready"})
    step = plan(obs(reps=loaded, triton_versions=frozenset({1})))
    assert step.actions == [TritonLoad(2, 1)]  # the old dense version stays loaded
    checked = Target("v2", 2, "full", "s3://b/v2", dense_version=2, golden=True)
    both = frozenset({1, 2})
    assert plan(obs(reps=loaded, me=checked, triton_versions=both)).actions == [GoldenCheck()]
    step = plan(obs(reps=loaded, me=checked, triton_versions=both, golden_passed=True))
    assert step.actions == [Commit("r0", 2), Commit("r1", 2)]
    committed = replicas({1: "ready", 2: "active"}, active=2)
    step = plan(obs(reps=committed, triton_versions=both))
    assert step.phase == Phase.ACTIVE and step.activate


def test_a_golden_set_mismatch_fails_the_version_before_it_serves():
    loaded = replicas({1: "active", 2: "ready"})
    step = plan(obs(reps=loaded, failure="golden set: off by 0.3",
                    failure_reason="GoldenSetMismatch"))
    assert step.phase == Phase.FAILED and step.reason == "GoldenSetMismatch"


def test_restart_mid_commit_commits_only_the_rest():
    mixed = [Replica("r0", 0, 2, {1: "ready", 2: "active"}),
             Replica("r1", 1, 1, {1: "active", 2: "ready"})]
    assert plan(obs(reps=mixed)).actions == [Commit("r1", 2)]


def test_a_shard_without_servers_loads_elsewhere_but_never_commits():
    step = plan(obs(reps=[Replica("r0", 0, 1, {1: "active"})]))
    assert step.actions == [LoadFull("r0", 2, "s3://b/v2", 2)]
    assert "shard(s) [1]" in step.message
    step = plan(obs(reps=[Replica("r0", 0, 1, {1: "active", 2: "ready"})]))
    assert step.actions == [] and step.phase is None


def test_load_failure_fails_without_serving_and_frees_the_version():
    reps = [Replica("r0", 0, 1, {1: "active", 2: "failed"}, errors={2: "ChecksumError"}),
            Replica("r1", 1, 1, {1: "active", 2: "ready"})]
    step = plan(obs(reps=reps))
    assert step.phase == Phase.FAILED and "ChecksumError" in step.message
    restore = plan(obs(phase=Phase.FAILED, reps=reps))
    assert restore.actions == [Drop("r0", 2), Drop("r1", 2)] and restore.restored


def test_commit_failure_rolls_back_with_no_reload():
    reps = [Replica("r0", 0, 2, {1: "ready", 2: "active"}),
            Replica("r1", 1, 1, {1: "active", 2: "ready"})]
    step = plan(obs(reps=reps, failure="r1 unavailable"))
    assert step.phase == Phase.ROLLED_BACK and step.reason == "CommitFailed"
    restore = plan(obs(phase=Phase.ROLLED_BACK, reps=reps, triton_versions=frozenset({1})))
    assert restore.actions == [Rollback("r0", 1)]  # held: no S3 read


def test_incremental_applies_on_its_base_and_a_new_replica_builds_the_base_first():
    inc = Target("v3", 3, "incremental", "s3://b/v3", base=NEW)
    step = plan(obs(me=inc, reps=replicas({2: "active"}, active=2)))
    assert step.actions[0] == ApplyIncremental("r0", 3, 2, "s3://b/v3")
    fresh = [Replica("r0", 0, 2, {2: "active"}), Replica("r1", 1, 0, {})]
    assert plan(obs(me=inc, reps=fresh)).actions == [
        ApplyIncremental("r0", 3, 2, "s3://b/v3"), LoadFull("r1", 2, "s3://b/v2", 2)]
    step = plan(obs(me=Target("v3", 3, "incremental", "s3://b/v3"), reps=fresh))
    assert step.phase == Phase.FAILED and step.reason == "BaseNotHeld"


def test_catch_up_builds_the_active_chain_on_a_new_replica_then_commits_and_frees_bases():
    inc = Target("v3", 3, "incremental", "s3://b/v3", base=NEW)
    serving = Replica("r0", 0, 3, {3: "active"})
    step = catch_up_step([serving, Replica("r1", 0, 0, {})], inc, release=True)
    assert step.actions == [LoadFull("r1", 2, "s3://b/v2", 2)] and not step.done
    step = catch_up_step([serving, Replica("r1", 0, 0, {2: "ready"})], inc, release=True)
    assert step.actions == [ApplyIncremental("r1", 3, 2, "s3://b/v3")]
    step = catch_up_step([serving, Replica("r1", 0, 0, {2: "ready", 3: "ready"})], inc, True)
    assert step.actions == [Commit("r1", 3)]
    caught = Replica("r1", 0, 3, {2: "ready", 3: "active"})
    assert catch_up_step([serving, caught], inc, release=False).done
    step = catch_up_step([serving, caught], inc, release=True)
    assert step.actions == [Drop("r1", 2)]
    missed = Replica("r2", 1, 2, {2: "active", 3: "ready"})  # missed the commit
    assert catch_up_step([missed], inc, release=False).actions == [Commit("r2", 3)]


def test_breach_in_window_rolls_back_and_restores_everything():
    active = replicas({1: "ready", 2: "active"}, active=2)
    until = NOW + timedelta(minutes=5)
    assert plan(obs(Phase.ACTIVE, active, watch_until=until)).phase is None
    step = plan(obs(Phase.ACTIVE, active, watch_until=until, breach="p99 0.9 > 0.5"))
    assert step.phase == Phase.ROLLED_BACK and step.reason == "MetricBreach"
    restore = plan(obs(Phase.ROLLED_BACK, active, triton_versions=frozenset({2})))
    assert restore.actions == [Rollback("r0", 1), Rollback("r1", 1)]
    back = replicas({1: "active", 2: "ready"})
    assert plan(obs(Phase.ROLLED_BACK, back, triton_versions=frozenset({2}))).actions == [
        TritonLoad(1, None)]
    done = plan(obs(Phase.ROLLED_BACK, back, triton_versions=frozenset({1})))
    assert done.actions == [Drop("r0", 2), Drop("r1", 2)] and done.restored


def test_rollback_reloads_a_full_previous_on_a_replica_that_lost_it():
    reps = [Replica("r0", 0, 2, {2: "active"}), Replica("r1", 1, 2, {1: "ready", 2: "active"})]
    step = plan(obs(Phase.ROLLED_BACK, reps))
    assert step.actions == [LoadFull("r0", 1, "s3://b/v1", 1)]


def test_window_passed_releases_the_previous_version():
    active = replicas({1: "ready", 2: "active"}, active=2)
    step = plan(obs(Phase.ACTIVE, active, watch_until=NOW - timedelta(seconds=1),
                    triton_versions=frozenset({1, 2})))
    assert step.verify and step.done
    assert step.actions == [Drop("r0", 1), Drop("r1", 1), TritonLoad(2, None)]


def test_a_version_waits_for_its_own_triton_pods_before_it_serves():
    """No Triton pod ready yet (the model runs its own): the shards hold the version
    loaded, nothing commits, and the status says why; a ready pod then gets the load."""
    loaded = replicas({1: "active", 2: "ready"})
    step = plan(obs(reps=loaded, triton_expected=True))
    assert step.actions == [] and step.phase is None
    assert step.reason == WAITING_FOR_TRITON and "dense version 2" in step.message
    step = plan(obs(reps=loaded, triton_expected=True, triton_versions=frozenset()))
    assert step.actions == [TritonLoad(2, 1)]
    # A model whose Triton servers are External and none registered goes on without.
    assert plan(obs(reps=loaded)).actions == [Commit("r0", 2), Commit("r1", 2)]
    # A version with no dense version does not wait for Triton.
    sparse = Target("v2", 2, "full", "s3://b/v2")
    step = plan(obs(reps=loaded, me=sparse, triton_expected=True))
    assert step.actions == [Commit("r0", 2), Commit("r1", 2)]


def test_catch_up_loads_the_active_dense_version_on_a_late_triton_server():
    serving = [Replica("r0", 0, 2, {2: "active"}), Replica("r1", 1, 2, {2: "active"})]
    # A pod that started late runs the repository's default (version 2 of a repository
    # that holds 1 and 2; the driver reports a server on the repository's config as
    # holding nothing), one that is empty, and one that serves the active version.
    servers = {"t0:8001": frozenset({1}), "t1:8001": frozenset(), "t2:8001": frozenset({2}),
               "t3:8001": frozenset({1, 2})}
    step = catch_up_step(serving, OLD_ACTIVE, release=True, triton=servers)
    assert step.actions == [TritonLoad(1, server="t1:8001"), TritonLoad(1, server="t2:8001"),
                            TritonLoad(1, server="t3:8001")]
    assert not step.done and "3 Triton server(s)" in step.message
    # In the window the previous dense version may stay loaded beside the active one.
    step = catch_up_step(serving, OLD_ACTIVE, release=False, triton=servers, keep=2)
    assert step.actions == [TritonLoad(1, server="t1:8001"), TritonLoad(1, server="t2:8001")]
    caught = {"t0:8001": frozenset({1}), "t1:8001": frozenset({1})}
    assert catch_up_step(serving, OLD_ACTIVE, release=True, triton=caught).done
    # An active version with no dense version leaves Triton alone.
    sparse = Target("v2", 2, "full", "s3://b/v2")
    assert catch_up_step(serving, sparse, release=True, triton=servers).done


# The settled active version of the catch-up tests: shard version 2 with dense version 1.
OLD_ACTIVE = Target("v2", 2, "full", "s3://b/v2", dense_version=1)
