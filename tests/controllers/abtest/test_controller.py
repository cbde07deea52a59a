"""The ABTest controller's pure parts: ramp, weights, routes, guardrails, client header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controllers.abtest import ramp
from controllers.abtest.guardrails import breaches
from controllers.abtest.routes import MAX_ARMS, routes
from recop import client
from recop.api.abtest import ARM_HEADER, ABTestSpec

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def spec(**changes) -> ABTestSpec:
    doc = {
        "baseline": {"name": "control", "model": "ranker", "weight": 60},
        "variants": [{"name": "wide", "model": "ranker-wide", "weight": 20},
                     {"name": "deep", "model": "ranker-deep", "weight": 20}],
        "stickiness": {"salt": "s1"},
        "ramp": {"initialPercent": 10, "stepPercent": 30, "interval": "10m"},
        "successMetric": {"name": "ctr", "query": 'ctr{arm="$arm"}'},
        "guardrails": [{"name": "errors", "query": 'errors{arm="$arm"}', "threshold": 0.05}],
    }
    doc.update(changes)
    return ABTestSpec.model_validate(doc)


def test_ramp_grows_by_step_per_interval_and_caps_at_100():
    s = spec()
    assert ramp.ramp_percent(s, None, T0) == 0
    assert [ramp.ramp_percent(s, T0, T0 + timedelta(minutes=m)) for m in (0, 9, 10, 20, 30)] \
        == [10, 10, 40, 70, 100]
    assert ramp.ramp_percent(s, T0, T0 + timedelta(days=9)) == 100


def test_applied_weights_sum_to_100_and_stopped_share_goes_to_baseline():
    s = spec()
    assert ramp.applied_weights(s, 100, set()) == {"control": 60, "wide": 20, "deep": 20}
    assert ramp.applied_weights(s, 10, set()) == {"control": 96, "wide": 2, "deep": 2}
    assert ramp.applied_weights(s, 100, {"wide"}) == {"control": 80, "wide": 0, "deep": 20}
    assert ramp.applied_weights(s, 100, set(), winner="deep") == \
        {"control": 0, "wide": 0, "deep": 100}


def test_bucket_weights_are_basis_points_and_ignore_stops():
    assert ramp.bucket_weights(spec(), 10) == {"control": 9600, "wide": 200, "deep": 200}
    assert sum(ramp.bucket_weights(spec(), 100).values()) == 10_000


def test_routes_have_a_header_rule_per_arm_and_the_weighted_default():
    s = spec()
    weights = ramp.applied_weights(s, 100, {"wide"})
    http, grpc = routes("exp", "ns", "uid-1", s, weights, {"wide"})
    assert (http["kind"], grpc["kind"]) == ("HTTPRoute", "GRPCRoute")
    assert http["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io",
                                           "kind": "Gateway", "name": "recop",
                                           "namespace": "ns"}]
    assert http["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    rules = http["spec"]["rules"]
    headers = {r["matches"][0]["headers"][0]["value"]: r["backendRefs"][0]["name"]
               for r in rules[:-1]}
    # The stopped arm's users are pinned to the baseline, the others to their own model.
    assert headers == {"control": "ranker-triton", "wide": "ranker-triton",
                       "deep": "ranker-deep-triton"}
    assert all(r["matches"][0]["headers"][0]["name"] == ARM_HEADER for r in rules[:-1])
    default = {b["name"]: (b["port"], b["weight"]) for b in rules[-1]["backendRefs"]}
    assert default == {"ranker-triton": (8000, 80), "ranker-wide-triton": (8000, 0),
                       "ranker-deep-triton": (8000, 20)}
    assert {b["port"] for b in grpc["spec"]["rules"][-1]["backendRefs"]} == {8001}


def test_arms_sharing_a_model_share_one_weighted_backend():
    s = spec(variants=[{"name": "v2", "model": "ranker", "version": "ranker-v2",
                        "weight": 40}])
    http, _ = routes("exp", "ns", "u", s, ramp.applied_weights(s, 100, set()), set())
    assert http["spec"]["rules"][-1]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "ranker-triton", "port": 8000, "weight": 100}]


def test_too_many_arms_for_a_route_are_refused():
    variants = [{"name": f"v{i}", "model": f"m{i}", "weight": 1} for i in range(MAX_ARMS)]
    s = spec(baseline={"name": "control", "model": "ranker", "weight": 100 - MAX_ARMS},
             variants=variants)
    with pytest.raises(ValueError, match="at most"):
        routes("exp", "ns", "u", s, ramp.applied_weights(s, 100, set()), set())


def test_guardrail_breach_names_the_variant_and_no_data_is_not_a_breach():
    samples = {'errors{arm="wide"}': 0.2, 'errors{arm="deep"}': None}
    found = breaches(spec(), set(), samples.__getitem__)
    assert list(found) == ["wide"] and "errors" in found["wide"]
    assert breaches(spec(), {"wide"}, samples.__getitem__) == {}
    less = spec(guardrails=[{"name": "ctr-floor", "query": 'errors{arm="$arm"}',
                             "threshold": 0.5, "comparison": "LessThan"}])
    assert list(breaches(less, set(), samples.__getitem__)) == ["wide"]


def _abtest(stopped=()):
    s = spec()
    return {"metadata": {"name": "exp", "namespace": "ns"}, "spec": s.to_wire(),
            "status": {"bucketWeights": ramp.bucket_weights(s, 100),
                       "stoppedArms": list(stopped)}}


def test_client_header_is_sticky_and_follows_the_weights():
    users = [f"user-{i}" for i in range(4000)]
    arms = [client.arm_for_user(u, _abtest()) for u in users]
    assert arms == [client.arm_for_user(u, _abtest()) for u in users]
    share = {a: arms.count(a) / len(arms) for a in ("control", "wide", "deep")}
    assert share["control"] == pytest.approx(0.6, abs=0.03)
    assert share["wide"] == pytest.approx(0.2, abs=0.03)
    assert client.arm_header("user-1", _abtest()) == {"x-recop-arm": arms[1]}


def test_stopping_a_variant_moves_only_its_users_to_the_baseline():
    users = [f"user-{i}" for i in range(2000)]
    before = {u: client.arm_for_user(u, _abtest()) for u in users}
    after = {u: client.arm_for_user(u, _abtest(stopped=["wide"])) for u in users}
    for u in users:
        assert after[u] == ("control" if before[u] == "wide" else before[u])
