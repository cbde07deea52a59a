"""The predict entry model in the Triton pod spec, and the checks on a request."""

from __future__ import annotations

import pytest

from controllers.recmodel.objects import Owner, triton_deployment
from embedding.predict.contract import CONFIG_ENV, BadRequest, EntryConfig
from recop.api.recmodel import RecModelSpec

OWNER = Owner("ranker", "prod", "uid-1")


def spec(**entry) -> RecModelSpec:
    return RecModelSpec.model_validate({
        "tables": [{"name": "user", "dimension": 16, "rows": 10},
                   {"name": "item", "dimension": 32, "rows": 10}],
        "sharding": {"shards": 2},
        "embeddingServer": {"lookupLimits": {"maxIdsPerRequest": 20000}},
        "dense": {"modelName": "ctr", "entryModel": entry},
        "storage": {"bucket": "models"}})


def container(model: RecModelSpec) -> dict:
    return triton_deployment(OWNER, model)["spec"]["template"]["spec"]["containers"][0]


def test_enabled_entry_model_starts_with_the_server_and_finds_shards_by_service_name():
    triton = container(spec(enabled=True, denseInputs={"age": 1}))
    assert "--model-repository=/opt/recop/models" in triton["args"]
    assert "--load-model=predict" in triton["args"]
    env = {e["name"]: e.get("value") for e in triton["env"]}
    config = EntryConfig.parse(env[CONFIG_ENV])
    assert config.shards == [["ranker-emb-0.prod.svc:8500"],
                             ["ranker-emb-1.prod.svc:8500"]]
    assert config.tables == {"user": 16, "item": 32} and config.dense_model == "ctr"
    assert config.max_ids == 20000 and config.dense_inputs == {"age": 1}
    assert config.outputs == ["score"] and not config.zero_rows_when_shard_unavailable
    zero = container(spec(enabled=True, whenShardUnavailable="ZeroRows"))
    assert EntryConfig.parse(next(e["value"] for e in zero["env"] if e["name"] == CONFIG_ENV)
                             ).zero_rows_when_shard_unavailable


def test_disabled_by_default_the_pod_is_unchanged():
    triton = container(spec())
    assert not any("predict" in a or "/opt/recop" in a for a in triton["args"])
    assert CONFIG_ENV not in {e["name"] for e in triton["env"]}


def test_a_request_over_the_limit_or_with_rows_that_do_not_line_up_is_refused():
    config = EntryConfig.parse(EntryConfig("ctr", [["a:1"]], {"user": 4}, ["score"],
                                           max_ids=10).to_json())
    config.check({"user": [1] * 10}, {})
    with pytest.raises(BadRequest, match=r"11 ids in one request.*limit of 10"):
        config.check({"user": [1] * 11}, {})
    with pytest.raises(BadRequest, match="user: 2, age: 3"):
        config.check({"user": [1, 2]}, {"age": [[1.0]] * 3})


def test_a_broken_configuration_says_what_is_wrong():
    with pytest.raises(ValueError, match="not a valid entry model configuration"):
        EntryConfig.parse('{"shards": []}')
    with pytest.raises(ValueError, match="at least one address"):
        EntryConfig.parse('{"denseModel": "m", "shards": [[]], "tables": {"t": 4}, '
                          '"outputs": ["score"]}')
