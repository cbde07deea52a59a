"""`kubectl recop` through kubectl's own plugin lookup (the `kubectl-recop` executable on
PATH), against the real control plane, with the operator (a real process) driving two
real embedding-server processes that load from a real MinIO: the tree of a model with
two versions, a rollback from the plugin that the operator carries out, the namespace
status, and an ABTest's promote and abort as spec changes the API accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devstack import minio as local_minio
from devstack.external import external_model, s3_secret, shard_slice
from devstack.shards import LocalCluster
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter

NS = "e2e-kubectl-plugin"
BUCKET = "recop-e2e-plugin"
MODEL = "ranked"
ROWS = 500


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def version(name: str) -> dict:
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": MODEL, "kind": "full", "source": f"s3://{BUCKET}/{name}"}}


@pytest.fixture(scope="module")
def parts(cluster):
    cluster.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                    timeout=180)
    cluster.kubectl("create", "namespace", NS)
    s3 = local_minio.start()
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    ids = np.arange(ROWS, dtype=np.int64)
    for number in (1, 2):
        CheckpointWriter(client, f"s3://{BUCKET}/v{number}", 2).write_full(
            number, {"user": (ids, np.full((ROWS, 8), number, np.float32))})
    servers = LocalCluster(2, replicas=1, env=s3.env)
    operator = None
    try:
        apply(cluster, s3_secret(NS, s3.access_key, s3.secret_key))
        apply(cluster, external_model(NS, MODEL, [{"name": "user", "dimension": 8,
                                                   "rows": ROWS}], 2, BUCKET, s3.endpoint))
        for proc in servers.processes:
            apply(cluster, shard_slice(NS, MODEL, proc.shard_index,
                                       {"lookup": proc.lookup_port, "admin": proc.admin_port}))
        operator = OperatorProcess(cluster.kubeconfig, NS)
        yield cluster
    finally:
        if operator is not None:
            operator.stop()
        servers.stop()
        s3.stop()
        cluster.kubectl("delete", "namespace", NS, "--wait=false")


def plugin(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`kubectl recop ...` as a user runs it: kubectl finds kubectl-recop on PATH."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                    *map(str, cluster.bin_dirs), os.environ["PATH"]])}
    done = subprocess.run([str(cluster.kubectl_bin), "recop", "-n", NS, *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert not check or done.returncode == 0, done.stderr
    return done


def phase(cluster, name: str) -> str | None:
    return get_json(cluster, "-n", NS, "modelversion", name).get("status", {}).get("phase")


def test_tree_shows_versions_and_the_version_each_replica_serves(parts):
    cluster = parts
    apply(cluster, version("v1"))
    wait_for(lambda: phase(cluster, "v1") == "Active", timeout=120, what="v1 Active")
    apply(cluster, version("v2"))
    wait_for(lambda: phase(cluster, "v2") == "Active", timeout=120, what="v2 Active")

    tree = json.loads(plugin(cluster, "tree", MODEL, "-o", "json").stdout)
    assert tree["activeVersion"] == "v2"
    assert {v["name"]: v["phase"] for v in tree["versions"]} == {"v2": "Active",
                                                                   "v1": "Superseded"}
    replicas = [r for s in tree["shardReplicas"] for r in s["replicas"]]
    assert len(replicas) == 2 and {r["serves"] for r in replicas} == {"v2"}

    text = plugin(cluster, "tree", MODEL).stdout
    print(text)
    assert "\033[" not in text, "piped output is plain"
    assert text.splitlines()[0].startswith(f"recmodel/{MODEL}  Ready  2/2 shards ready")
    assert text.count("serves v2") == 2


def test_rollback_from_the_plugin_is_carried_out_by_the_operator(parts):
    cluster = parts
    refused = plugin(cluster, "rollback", MODEL, "--to", "v9", check=False)
    assert refused.returncode == 1
    assert "modelversion/v9 does not exist" in refused.stderr

    said = plugin(cluster, "rollback", MODEL, "--to", "v1").stdout
    assert "spec.activeVersion set to v1" in said

    def serving() -> set[str]:
        tree = json.loads(plugin(cluster, "tree", MODEL, "-o", "json").stdout)
        return {r["serves"] for s in tree["shardReplicas"] for r in s["replicas"]} \
            if tree["activeVersion"] == "v1" else set()

    wait_for(lambda: serving() == {"v1"}, timeout=120, what="v1 served again")
    status = json.loads(plugin(cluster, "status", "-o", "json").stdout)
    assert status["recmodels"][0]["activeVersion"] == "v1"
    assert status["recmodels"][0]["rolledBack"] == ["v2"]
    assert "v2" in plugin(cluster, "status").stdout


def test_promote_and_abort_rewrite_the_weights(parts):
    cluster = parts
    apply(cluster, {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "ABTest",
        "metadata": {"name": "split", "namespace": NS},
        "spec": {"baseline": {"name": "a", "model": MODEL, "weight": 70},
                 "variants": [{"name": "b", "model": MODEL, "weight": 30}],
                 "successMetric": {"name": "ctr", "query": 'ctr{arm="$arm"}'},
                 "cost": {"measurement": "spec"}}})

    def weights() -> dict[str, int]:
        spec = get_json(cluster, "-n", NS, "abtest", "split")["spec"]
        return {spec["baseline"]["name"]: spec["baseline"]["weight"],
                **{v["name"]: v["weight"] for v in spec["variants"]}}

    assert "all traffic to b" in plugin(cluster, "promote", "split", "b").stdout
    assert weights() == {"a": 0, "b": 100}
    assert "back to the baseline a" in plugin(cluster, "abort", "split").stdout
    assert weights() == {"a": 100, "b": 0}
    unknown = plugin(cluster, "promote", "split", "c", check=False)
    assert unknown.returncode == 1 and "has no arm 'c'" in unknown.stderr
