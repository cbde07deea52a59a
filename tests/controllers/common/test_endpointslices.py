"""EndpointSlices grouped by Service and counted with Kubernetes' readiness rule."""

from __future__ import annotations

from controllers.common import labels as L
from controllers.common.endpointslices import by_service, endpoint_ready, ready_endpoints


def test_unset_or_null_ready_is_ready_only_false_is_not():
    # The EndpointSlice API: a nil `ready` is an unknown state consumers take as ready.
    assert endpoint_ready({"conditions": {"ready": True}})
    assert endpoint_ready({"conditions": {}})
    assert endpoint_ready({})
    assert endpoint_ready({"conditions": {"ready": None}})
    assert not endpoint_ready({"conditions": {"ready": False}})


def test_ready_endpoints_counts_across_a_services_slices():
    slices = [{"endpoints": [{"conditions": {"ready": True}}, {"conditions": {"ready": None}},
                             {"conditions": {"ready": False}}]},
              {"endpoints": None}, {"endpoints": [{"addresses": ["10.0.0.1"]}]}]
    assert ready_endpoints(slices) == 3


def test_slices_are_grouped_by_their_service_label():
    def slice_of(service, name):
        return {"metadata": {"name": name, "labels": {L.SERVICE_NAME: service}}}

    grouped = by_service([slice_of("m-emb-0", "a"), slice_of("m-triton", "b"),
                          slice_of("m-emb-0", "c"), {"metadata": {"name": "d"}}])
    assert [s["metadata"]["name"] for s in grouped["m-emb-0"]] == ["a", "c"]
    assert [s["metadata"]["name"] for s in grouped["m-triton"]] == ["b"]
    assert "m-emb-1" not in grouped and len(grouped[""]) == 1
