import pytest
from pydantic import ValidationError

from costmodel import Measured, ModelCost, split_qps
from tests.costmodel.builders import GIB, figure, model, node


def test_baseline_gets_whole_cores_rounded_up():
    # 1.1 busy cores at 70% target -> 1.571 cores -> 2 whole cores.
    m = model("b", role="baseline", cores=1.1, target=0.7)
    assert m.cpu_millicores_request == 2000


def test_baseline_gets_at_least_one_core():
    assert model("b", role="baseline", cores=0.0).cpu_millicores_request == 1000


def test_variant_gets_millicores_with_headroom():
    assert model("v", cores=0.35, target=0.7).cpu_millicores_request == 500
    assert model("v", cores=0.0).cpu_millicores_request == 1


def test_gpu_share_from_utilisation_and_target():
    v = model("v", gpu_util=0.2, target=0.5)
    assert v.needs_gpu and v.gpu_share_units == 4000
    assert model("b", role="baseline", gpu_memory_gib=1).gpu_share_units == 10_000
    assert not model("c").needs_gpu and model("c").gpu_share_units == 0


def test_every_figure_keeps_its_source():
    m = ModelCost(
        name="v",
        role="variant",
        qps=Measured(value=10, source="prometheus:rate(x[5m])@2026-01-01T00:00:00Z"),
        cpu_core_seconds_per_1k=Measured(value=2, source="profile:run-7"),
        memory_bytes=Measured.spec(GIB),
    )
    assert m.sources() == {
        "qps": "prometheus:rate(x[5m])@2026-01-01T00:00:00Z",
        "cpu_core_seconds_per_1k": "profile:run-7",
        "memory_bytes": "spec",
        "gpu_memory_bytes": "spec",
        "gpu_utilisation": "spec",
    }


def test_split_qps_records_weights_and_total_source():
    total = Measured(value=1000, source="prometheus:q@t")
    split = split_qps(total, {"base": 9000, "v1": 1000})
    assert split["v1"].value == pytest.approx(100)
    assert split["v1"].source == "weights(1000/10000)*prometheus:q@t"
    with pytest.raises(ValueError):
        split_qps(total, {"a": 0})


def test_inputs_are_validated_and_frozen():
    with pytest.raises(ValidationError):
        Measured(value=-1, source="spec")
    with pytest.raises(ValidationError):
        Measured(value=1, source="")
    with pytest.raises(ValidationError):
        model("v", target=0)
    m = model("v")
    with pytest.raises(ValidationError):
        m.name = "w"
    n = node("n", reserved_cpu_millicores=1500)
    assert n.free_whole_cores == 14
    assert figure(1).source == "profile:test-run"
