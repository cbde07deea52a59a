"""devstack.node without starting anything: the configuration it writes for containerd
and the kubelet is what this machine needs, and a checkout that does not hold the real
node never tears down the machine-wide parts of it."""

from __future__ import annotations

import json
import tomllib

import pytest
import yaml

from devstack import netns, node


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOP_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("RECOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(node, "OWNER", tmp_path / "owner")
    return tmp_path


def test_containerd_config_runs_pods_here(state):
    config = tomllib.loads(node._containerd_config("localhost/recop/pause:abc").read_text())
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/recop/pause:abc"
    assert cri["restrict_oom_score_adj"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    conflist = json.loads(next((state / "state" / "node" / "cni" / "net.d").glob("*"))
                          .read_text())
    bridge = conflist["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": netns.POD_CIDR}]]


def test_kubelet_config_fits_cgroup_v1_and_dedicates_cores(state):
    config = yaml.safe_load(node._kubelet_config(state / "pki").read_text())
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cpuManagerPolicy"] == "static"
    assert config["address"] == netns.NODE_IP
    assert node.TAINT in config["registerWithTaints"]
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_down_from_a_checkout_that_does_not_hold_the_node_leaves_it(state, monkeypatch):
    holder = state / "other-checkout" / "node"
    holder.mkdir(parents=True)
    node.OWNER.write_text(str(holder))

    def refuse(*_args, **_kwargs):
        raise AssertionError("touched the other checkout's node")

    for name in ("_kill_leftovers", "_unmount_under", "_remove_cgroups"):
        monkeypatch.setattr(node, name, refuse)
    monkeypatch.setattr(netns, "down", refuse)
    node.down()
    assert node.OWNER.read_text() == str(holder)
    with pytest.raises(node.NodeError, match="held by"):
        node._claim()
