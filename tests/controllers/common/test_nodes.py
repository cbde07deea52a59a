"""Node objects parsed once, and the selector and tolerations RecOp's pods get."""

from __future__ import annotations

from controllers.common.nodes import (
    GPU_TOLERATION,
    eligible,
    node_pool,
    parse_node,
    pod_selector,
    pod_tolerations,
)
from recop.api.common import PodPlacement, Toleration

GPU_NODE = {"metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.present": "true"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present",
                                 "effect": "NoSchedule"},
                                {"key": "spot", "effect": "PreferNoSchedule"}]},
            "status": {"allocatable": {"cpu": "96", "memory": "64Gi", "nvidia.com/gpu": "8"}}}
CPU_NODE = {"metadata": {"name": "cpu-0"}, "status": {"allocatable": {"memory": "8Gi"}}}


def test_a_node_object_becomes_resources_labels_and_taints():
    node = parse_node(GPU_NODE)
    assert (node.cpu_millicores, node.memory_bytes, node.gpu_count) == (96_000, 64 * 2**30, 8)
    assert node.labels == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.value, t.effect) for t in node.taints] == [
        ("nvidia.com/gpu", "present", "NoSchedule"), ("spot", "", "PreferNoSchedule")]
    bare = parse_node(CPU_NODE)
    assert (bare.cpu_millicores, bare.gpu_count, bare.labels, bare.taints) == (0, 0, {}, ())


def test_the_pool_leaves_cordoned_nodes_out():
    cordoned = {**CPU_NODE, "metadata": {"name": "cpu-1"}, "spec": {"unschedulable": True}}
    assert [n.name for n in node_pool([GPU_NODE, CPU_NODE, cordoned]).nodes] == [
        "gpu-0", "cpu-0"]


def test_gpu_pods_add_the_gpu_label_and_toleration_once():
    placement = PodPlacement(node_selector={"pool": "a"}, tolerations=[
        Toleration(key="dedicated", operator="Exists"), GPU_TOLERATION])
    assert pod_selector(placement, gpu=True) == {"pool": "a", "nvidia.com/gpu.present": "true"}
    assert pod_selector(placement, gpu=False) == {"pool": "a"}
    assert pod_tolerations(placement, gpu=True) == placement.tolerations
    assert pod_tolerations(PodPlacement(), gpu=True) == [GPU_TOLERATION]
    assert pod_tolerations(PodPlacement(), gpu=False) == []
    assert GPU_TOLERATION.to_wire() == {"key": "nvidia.com/gpu", "operator": "Exists",
                                        "effect": "NoSchedule"}


def test_eligibility_needs_the_selector_and_every_hard_taint_tolerated():
    gpu, cpu = parse_node(GPU_NODE), parse_node(CPU_NODE)
    assert eligible(gpu, PodPlacement(), gpu=True)
    assert not eligible(cpu, PodPlacement(), gpu=True)
    # Without the GPU toleration the NoSchedule taint keeps a pod off; PreferNoSchedule
    # does not.
    assert not eligible(gpu, PodPlacement(), gpu=False)
    assert eligible(gpu, PodPlacement(tolerations=[Toleration(operator="Exists")]), gpu=False)
    wrong_value = Toleration(key="nvidia.com/gpu", value="absent", effect="NoSchedule")
    assert not eligible(gpu, PodPlacement(tolerations=[wrong_value]), gpu=False)
    other_effect = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoExecute")
    assert not eligible(gpu, PodPlacement(tolerations=[other_effect]), gpu=False)
