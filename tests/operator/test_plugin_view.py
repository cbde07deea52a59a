"""`kubectl recop`'s views, from objects shaped as the API returns them."""

from __future__ import annotations

import pytest

from recop_operator import plugin_view as view


def model(**status) -> dict:
    return {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"sharding": {"shards": 2}, "embeddingServer": {"adminPort": 8501}},
            "status": {"phase": "Ready", "readyShards": 2, **status}}


def version(name: str, created: str, phase: str, shards=(), kind="full", **status) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"model": "m", "kind": kind},
            "status": {"phase": phase, "shards": list(shards), **status}}


def entry(shard: int, ip: str, state: str, fraction: float = 1.0) -> dict:
    return {"shard": shard, "replica": f"{ip}:8501", "state": state, "fraction": fraction}


def pod(name: str, shard: int, ip: str, ready: bool = True, component="embedding-server"):
    return {"metadata": {"name": name, "labels": {"recop.dev/model": "m",
                                                  "recop.dev/component": component,
                                                  "recop.dev/shard": str(shard)}},
            "spec": {"nodeName": "n1", "containers": [
                {"resources": {"limits": {"memory": "1Gi"}}}]},
            "status": {"phase": "Running", "podIP": ip,
                       "containerStatuses": [{"ready": ready, "restartCount": 0}]}}


VERSIONS = [
    version("v1", "2026-01-01T00:00:00Z", "Superseded",
            [entry(0, "10.0.0.1", "Committed"), entry(1, "10.0.0.2", "Committed")],
            activatedAt="2026-01-01T00:01:00Z"),
    version("v2", "2026-01-02T00:00:00Z", "Active",
            [entry(0, "10.0.0.1", "Committed"), entry(1, "10.0.0.2", "Committed")],
            activatedAt="2026-01-02T00:01:00Z", embeddingVersion=2, previousVersion="v1"),
    version("v3", "2026-01-03T00:00:00Z", "Loading",
            [entry(0, "10.0.0.1", "Loading", 0.5), entry(1, "10.0.0.2", "Loaded")],
            kind="incremental"),
    version("bad", "2026-01-04T00:00:00Z", "RolledBack", reason="ValidationFailed",
            message="row 3 is NaN"),
    {"metadata": {"name": "other"}, "spec": {"model": "else", "kind": "full"}},
]
PODS = [pod("m-emb-0-a", 0, "10.0.0.1"), pod("m-emb-1-a", 1, "10.0.0.2", ready=False),
        pod("m-triton-a", 0, "10.0.0.9", component="triton")]


def test_tree_shows_each_replicas_version_memory_and_what_it_is_loading():
    tree = view.model_tree(model(activeVersion="v2", lastCleanVersion="v1"), VERSIONS, PODS)
    assert [v["name"] for v in tree["versions"]] == ["bad", "v3", "v2", "v1"]
    roles = {v["name"]: v["roles"] for v in tree["versions"]}
    assert roles == {"bad": ["rolled back"], "v3": ["queued"], "v2": ["active"],
                     "v1": ["last clean"]}
    shard0, shard1 = (s["replicas"] for s in tree["shardReplicas"])
    assert shard0[0]["serves"] == "v2" and shard0[0]["memory"] == "1Gi"
    assert shard0[0]["loading"] == [{"version": "v3", "state": "Loading", "fraction": 0.5}]
    assert shard1[0]["ready"] is False
    assert [r["name"] for r in tree["triton"]] == ["m-triton-a"]


def test_tree_lists_external_servers_by_address():
    tree = view.model_tree(model(activeVersion="v2"), VERSIONS, [])
    assert [[r["name"] for r in s["replicas"]] for s in tree["shardReplicas"]] == \
        [["10.0.0.1:8501"], ["10.0.0.2:8501"]]
    assert tree["shardReplicas"][0]["replicas"][0]["serves"] == "v2"


def test_text_is_plain_without_colour_and_coloured_with_it():
    tree = view.model_tree(model(activeVersion="v2", lastCleanVersion="v1"), VERSIONS, PODS)
    plain = view.render_tree(tree, colour=False)
    assert "\033[" not in plain
    assert "recmodel/m  Ready  2/2 shards ready  active v2  last clean v1" in plain
    assert "ValidationFailed: row 3 is NaN" in plain
    assert "m-emb-0-a  Running ready  node n1  memory 1Gi  admin 10.0.0.1:8501  serves v2" \
        in plain
    assert "└─ triton" in plain
    assert "\033[31m" in view.render_tree(tree, colour=True)


def test_a_shard_without_replicas_says_so():
    text = view.render_tree(view.model_tree(model(activeVersion="v2"), [], []), colour=False)
    assert text.count("no replica") == 2


def test_status_table_counts_queued_and_rolled_back_versions():
    tests = [{"metadata": {"name": "t"}, "spec": {},
              "status": {"phase": "Running", "appliedWeights": {"a": 90, "b": 10},
                         "verdict": {"action": "Promote", "winner": "b"}}}]
    status = view.namespace_status([model(activeVersion="v2")], VERSIONS, tests)
    assert status["recmodels"][0]["queued"] == ["v3"]
    assert status["recmodels"][0]["rolledBack"] == ["bad"]
    text = view.render_status(status)
    assert "m         Ready  2/2     v2      v3      bad" in text
    assert "t       Running  a=90 b=10  -        Promote b" in text


def test_rollback_goes_to_the_last_clean_version_else_the_previous_one():
    assert view.rollback_target(model(activeVersion="v2", lastCleanVersion="v1"),
                                VERSIONS, None) == "v1"
    assert view.rollback_target(model(activeVersion="v2", lastCleanVersion="v2"),
                                VERSIONS, None) == "v1"
    assert view.rollback_target(model(activeVersion="v2"), VERSIONS, "v1") == "v1"


@pytest.mark.parametrize("to, message", [
    ("v2", "already serves"),
    ("nope", "does not exist or belongs to another model"),
    ("other", "does not exist or belongs to another model"),
])
def test_rollback_refuses_what_cannot_serve(to, message):
    with pytest.raises(ValueError, match=message):
        view.rollback_target(model(activeVersion="v2"), VERSIONS, to)


def test_rollback_without_an_earlier_version_asks_for_one():
    with pytest.raises(ValueError, match="name one with --to"):
        view.rollback_target(model(activeVersion="v1"), VERSIONS[:1], None)


def test_promote_and_abort_move_all_traffic_and_keep_the_arms():
    test = {"metadata": {"name": "t", "resourceVersion": "3"},
            "spec": {"baseline": {"name": "a", "model": "m", "weight": 80},
                     "variants": [{"name": "b", "model": "m2", "weight": 20}]}}
    assert view.weights_for(test, "b") == {
        "metadata": {"resourceVersion": "3"},
        "spec": {"baseline": {"weight": 0},
                 "variants": [{"name": "b", "model": "m2", "weight": 100}]}}
    assert view.weights_for(test, None)["spec"]["baseline"] == {"weight": 100}
    with pytest.raises(ValueError, match="no arm 'c' \\(arms: a, b\\)"):
        view.weights_for(test, "c")


def test_tree_shows_the_streams_freshness_against_its_objective():
    live = version("v2-live", "2026-01-02T01:00:00Z", "Active", kind="realtime",
                   realtime={"freshnessP99Seconds": 0.042})
    tree = view.model_tree(model(activeVersion="v2", freshness={
        "version": "v2-live", "p99Seconds": 0.042, "objectiveP99Seconds": 1.0}),
        [*VERSIONS, live], PODS)
    assert tree["freshnessObjectiveSeconds"] == 1.0
    assert "freshness p99 0.042s (objective 1s)" in view.render_tree(tree, colour=False)
