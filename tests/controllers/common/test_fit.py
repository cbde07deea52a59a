"""The fit checks' refusal of a memory limit below what one shard needs."""

from __future__ import annotations

from controllers.common.fit import refusal, shard_limit_problem
from controllers.common.nodes import parse_node
from controllers.recmodel.objects import shard_memory_bytes
from recop.api.recmodel import RecModelSpec
from recop.quantity import mebibytes

NODE = parse_node({"metadata": {"name": "n"}, "spec": {},
                   "status": {"allocatable": {"memory": "64Gi"}}})


def spec(resources: dict | None = None, **server) -> RecModelSpec:
    return RecModelSpec.model_validate({
        "tables": [{"name": "user", "dimension": 16, "rows": 2_000_000}],
        "sharding": {"shards": 2},
        "embeddingServer": {"image": "emb:1", "resources": resources or {}, **server},
        "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                  "instanceGroups": [{"kind": "KIND_CPU"}]},
        "storage": {"bucket": "models"},
    })


def test_a_limit_below_the_shards_need_is_refused_with_what_it_needs():
    model = spec({"limits": {"memory": "128Mi"}})
    need = shard_memory_bytes(model)
    problem = shard_limit_problem(model, need)
    assert problem is not None
    assert "resources.limits.memory is 128Mi" in problem
    assert f"needs {mebibytes(need)}" in problem and "OOM-killed" in problem
    assert refusal(model, need, [NODE]) == ("MemoryLimitTooLow", problem)


def test_a_request_alone_is_the_limit_and_is_checked_too():
    model = spec({"requests": {"memory": "0.1Gi"}})
    problem = shard_limit_problem(model, shard_memory_bytes(model))
    assert problem is not None and "resources.requests.memory is 0.1Gi" in problem


def test_the_limit_decides_when_both_are_set():
    need = shard_memory_bytes(spec())
    fits = spec({"requests": {"memory": "1Mi"}, "limits": {"memory": mebibytes(need)}})
    assert shard_limit_problem(fits, need) is None
    assert shard_limit_problem(spec({"requests": {"memory": "64Gi"},
                                     "limits": {"memory": "1Mi"}}), need) is not None


def test_no_explicit_memory_takes_the_default_which_fits():
    model = spec()
    assert shard_limit_problem(model, shard_memory_bytes(model)) is None
    assert refusal(model, shard_memory_bytes(model), [NODE]) is None


def test_external_servers_are_not_checked():
    model = spec({"limits": {"memory": "1Mi"}}, deployment="External")
    assert refusal(model, shard_memory_bytes(model), []) is None


def test_no_eligible_node_is_still_a_placement_refusal():
    model = spec()
    reason, message = refusal(model, shard_memory_bytes(model), [])
    assert reason == "CannotPlace" and "embeddingPlacement" in message
