"""The reconcile's view of Kopf's indexes."""

from __future__ import annotations

from controllers.recmodel.cache import (
    CHILDREN,
    MODELS_INDEX,
    NODES_INDEX,
    VERSIONS_INDEX,
    Cache,
    api_version,
    child_index,
    node_entry,
    trimmed,
    version_entry,
)


def _obj(name: str, **labels) -> dict:
    return {"metadata": {"name": name, "labels": labels,
                         "managedFields": [{"manager": "recop"}] * 50},
            "spec": {"replicas": 1}}


def test_the_cache_keeps_objects_without_their_managed_fields():
    kept = trimmed(_obj("m-emb-0"))
    assert "managedFields" not in kept["metadata"] and kept["spec"] == {"replicas": 1}


def test_a_reconcile_finds_its_model_children_and_nodes_by_key():
    node = {"metadata": {"name": "n1", "labels": {}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}}
    indexes = {MODELS_INDEX: {("ns", "m"): [{"metadata": {"name": "m"}}]},
               NODES_INDEX: {"nodes": [node_entry(node)["nodes"]]}, VERSIONS_INDEX: {},
               **{child_index(kind): {} for kind in CHILDREN}}
    indexes[child_index("Deployment")] = {("ns", "m"): [trimmed(_obj("m-emb-0")),
                                                        trimmed(_obj("m-triton"))]}
    cache = Cache.of(indexes)
    assert cache.model("ns", "m")["metadata"]["name"] == "m"
    assert cache.model("ns", "other") is None
    deployments = cache.children_by_name("Deployment", "ns", "m")
    assert deployments["m-triton"]["metadata"]["name"] == "m-triton"
    assert "gone" not in deployments
    assert cache.children_of("Pod", "ns", "m") == []
    (only,) = cache.node_list()
    assert only.name == "n1" and only.cpu_millicores == 4000


def test_each_child_kind_has_its_api_version():
    assert api_version("Deployment") == "apps/v1" and api_version("Service") == "v1"
    assert api_version("EndpointSlice") == "discovery.k8s.io/v1"


def test_a_version_is_indexed_by_its_model_with_what_its_cause_reads():
    body = {"metadata": {"name": "v2", "creationTimestamp": "2026-12-04T07:00:00Z",
                         "managedFields": [{"manager": "recop"}] * 50},
            "spec": {"model": "m", "kind": "full", "source": "s3://b/v2"},
            "status": {"phase": "Failed", "reason": "ValidationFailed", "message": "crc32",
                       "shards": [{"shard": 0}] * 64}}
    assert version_entry("ns", body) == {("ns", "m"): {
        "metadata": {"name": "v2", "creationTimestamp": "2026-12-04T07:00:00Z"},
        "spec": {"model": "m", "kind": "full"},
        "status": {"phase": "Failed", "reason": "ValidationFailed", "message": "crc32"}}}
    assert version_entry("ns", {"metadata": {"name": "x"}, "spec": {}}) == {}
