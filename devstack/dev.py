"""`recop-dev up|status|down`: RecOp end to end on an embedded local default.

`up` starts the real local control plane (API server, etcd, controller-manager,
scheduler, KWOK CPU and GPU nodes), MinIO, a Kafka broker, Prometheus and Triton on the
CPU; installs the CRDs; runs the operator and two embedding-server processes registered
as the endpoints of their shard Services; writes a small generated checkpoint to S3;
applies a RecModel and a full ModelVersion; and returns once the model is Ready and the
version Active, printing what runs where, a lookup and an inference answered through
the stack. A second `up` finds it running and only prints. `down` stops every process
it started and removes its state.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from devstack import cluster
from devstack import kafka as local_kafka
from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from devstack import triton as local_triton
from devstack.common import ManagedProcess, free_port, progress, stop_pid_file
from devstack.external import shard_slice, triton_slice
from recop import crdgen
from recop.api import RESOURCES

NAMESPACE = "recop-demo"
MODEL = "demo"
VERSION = "demo-v1"
BUCKET = "recop-demo"
SHARDS = 2
DIM = 16
ROWS = 20_000
TOPIC = "recop-demo-deltas"


def _root() -> Path:
    return Path(os.environ.get("RECOP_STATE", "/tmp/recop-state"))


def _saved_path() -> Path:
    return _root() / "dev.json"


def _healthy(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except OSError:
        return False
    return True


def _apply(info: cluster.ClusterInfo, obj: dict) -> None:
    info.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=recop-dev",
                 "-f", "-", input=json.dumps(obj))


def _install_crds(info: cluster.ClusterInfo) -> None:
    docs = "---\n".join(crdgen.render(r) for r in RESOURCES)
    info.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=recop-dev",
                 "-f", "-", input=docs)
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *(f"crd/{r.crd_name}" for r in RESOURCES), timeout=90)


def _write_checkpoint(s3) -> None:
    from embedding.checkpoint import CheckpointWriter

    rng = np.random.default_rng(7)
    ids = np.arange(ROWS, dtype=np.int64)
    tables = {name: (ids, rng.normal(0, 0.1, (ROWS, DIM)).astype(np.float32))
              for name in ("user", "item")}
    s3.create_bucket(Bucket=BUCKET)
    CheckpointWriter(s3, f"s3://{BUCKET}/v1", SHARDS).write_full(1, tables)


def _start_parts(info: cluster.ClusterInfo) -> dict:
    from devstack.shards import LocalCluster

    progress("S3 (MinIO), Kafka, Prometheus and Triton on the CPU")
    minio = local_minio.start()
    kafka = local_kafka.start()
    prometheus = local_prometheus.start()
    triton = local_triton.start(local_triton.TEST_MODELS)
    progress("writing a generated checkpoint to S3")
    _write_checkpoint(minio.client())
    progress(f"starting {SHARDS} embedding-server processes")
    servers = LocalCluster(SHARDS, replicas=1, env=minio.env, kafka_bootstrap=kafka.bootstrap,
                           topic=TOPIC)
    prometheus.set_targets("embedding", [f"127.0.0.1:{p.metrics_port}"
                                         for p in servers.processes], {"component": "embedding"})
    prometheus.set_targets("triton", [f"127.0.0.1:{triton.metrics_port}"],
                           {"component": "triton"})
    progress("starting the operator")
    ports = {"metrics": free_port(), "health": free_port()}
    operator = ManagedProcess("dev-operator", [
        sys.executable, "-m", "recop_operator.cli", "operator", "--standalone",
        f"--namespace={NAMESPACE}", f"--liveness=http://127.0.0.1:{ports['health']}/healthz",
    ], env={"KUBECONFIG": str(info.kubeconfig), "RECOP_PROMETHEUS_URL": prometheus.url,
            "RECOP_METRICS_PORT": str(ports["metrics"]), "RECOP_METRICS_ADDR": "127.0.0.1"})
    deadline = time.monotonic() + 60
    while not _healthy(ports["health"]):
        if operator.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the operator did not start:\n{operator.log_tail()}")
        time.sleep(0.3)
    prometheus.set_targets("operator", [f"127.0.0.1:{ports['metrics']}"],
                           {"component": "operator"})
    return {
        "pid_files": [str(p.pid_path) for p in (minio.process, kafka.process,
                                                 prometheus.process, triton.process,
                                                 operator)]
        + [str(s.process.pid_path) for s in servers.processes],
        "minio": minio.endpoint, "s3": {"key": minio.access_key, "secret": minio.secret_key},
        "kafka": kafka.bootstrap, "prometheus": prometheus.url,
        "triton_grpc": triton.grpc_address, "triton_grpc_port": triton.grpc_port,
        "operator": {"metrics": ports["metrics"], "health": ports["health"],
                     "log": str(operator.log_path)},
        "servers": [{"shard": s.shard_index, "lookup": s.lookup_port, "admin": s.admin_port,
                     "metrics": s.metrics_port} for s in servers.processes],
    }


def _apply_model(info: cluster.ClusterInfo, parts: dict) -> None:
    secret = {k: base64.b64encode(v.encode()).decode() for k, v in parts["s3"].items()}
    _apply(info, {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "demo-s3", "namespace": NAMESPACE}, "data": secret})
    _apply(info, {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": {
            "tables": [{"name": "user", "dimension": DIM, "rows": ROWS},
                       {"name": "item", "dimension": DIM, "rows": ROWS}],
            "sharding": {"shards": SHARDS, "replicasPerShard": 1},
            "embeddingServer": {"deployment": "External"},
            "dense": {"modelName": "mlp", "deployment": "External", "replicas": 1,
                      "gpusPerPod": 0, "instanceGroups": [{"kind": "KIND_CPU"}]},
            "storage": {"bucket": BUCKET, "endpoint": parts["minio"],
                        "accessKeyId": {"name": "demo-s3", "key": "key"},
                        "secretAccessKey": {"name": "demo-s3", "key": "secret"}},
            "stream": {"brokers": [parts["kafka"]], "topic": TOPIC},
        }})
    for server in parts["servers"]:
        _apply(info, shard_slice(NAMESPACE, MODEL, server["shard"], {
            "lookup": server["lookup"], "admin": server["admin"],
            "metrics": server["metrics"]}))
    _apply(info, triton_slice(NAMESPACE, MODEL, parts["triton_grpc_port"]))
    _apply(info, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                  "metadata": {"name": VERSION, "namespace": NAMESPACE},
                  "spec": {"model": MODEL, "kind": "full", "source": f"s3://{BUCKET}/v1",
                           "denseModelVersion": 1}})


def _serve(parts: dict) -> str:
    """A lookup through the shard servers and an inference on Triton with its rows."""
    from tritonclient.grpc import InferenceServerClient, InferInput

    from embedding.client import EmbeddingClient

    shards = [[f"127.0.0.1:{s['lookup']}" for s in parts["servers"] if s["shard"] == i]
              for i in range(SHARDS)]
    ids = np.array([3, 1_000, 19_999], dtype=np.int64)
    with EmbeddingClient(shards) as client:
        rows = client.lookup({"user": ids, "item": ids})
    inputs = []
    for name in ("user", "item"):
        tensor = InferInput(name, list(rows.values[name].shape), "FP32")
        tensor.set_data_from_numpy(rows.values[name])
        inputs.append(tensor)
    scores = InferenceServerClient(parts["triton_grpc"]).infer("mlp", inputs).as_numpy("score")
    def rounded(values) -> list[float]:
        return [round(float(v), 4) for v in values]

    return (f"lookup   ids {ids.tolist()} -> version {rows.version}, user[0][:4] = "
            f"{rounded(rows.values['user'][0][:4])}\n"
            f"infer    mlp(user, item) -> scores {rounded(scores.ravel())}")


def _table(info: cluster.ClusterInfo, parts: dict) -> str:
    model = json.loads(info.kubectl("-n", NAMESPACE, "get", "recmodel", MODEL,
                                    "-o", "json").stdout).get("status", {})
    version = json.loads(info.kubectl("-n", NAMESPACE, "get", "modelversion", VERSION,
                                      "-o", "json").stdout).get("status", {})
    rows = [
        ("control plane", info.server, "kube-apiserver, etcd, controller-manager, "
         "scheduler, KWOK (2 CPU, 2 GPU nodes)"),
        ("operator", f"127.0.0.1:{parts['operator']['metrics']}/metrics",
         parts["operator"]["log"]),
        ("S3 (MinIO)", parts["minio"], f"bucket {BUCKET}"),
        ("Kafka", parts["kafka"], f"topic {TOPIC}"),
        ("Prometheus", parts["prometheus"], "scrapes the servers, Triton, the operator"),
        ("Triton (CPU)", parts["triton_grpc"], "model mlp"),
        *((f"embedding shard {s['shard']}", f"127.0.0.1:{s['lookup']}",
           f"admin :{s['admin']}, metrics :{s['metrics']}") for s in parts["servers"]),
        (f"recmodel/{MODEL}", model.get("phase", "-"),
         f"{model.get('readyShards')}/{model.get('shards')} shards, active "
         f"{model.get('activeVersion')}"),
        (f"modelversion/{VERSION}", version.get("phase", "-"), version.get("reason") or ""),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:<32}  {c}" for a, b, c in rows)


def _wait(info: cluster.ClusterInfo) -> None:
    info.kubectl("-n", NAMESPACE, "wait", "--for=jsonpath={.status.phase}=Active",
                 f"modelversion/{VERSION}", "--timeout=180s", timeout=210)
    info.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"recmodel/{MODEL}",
                 "--timeout=120s", timeout=150)


def _running() -> tuple[cluster.ClusterInfo, dict] | None:
    info = cluster.running()
    if info is None or not _saved_path().exists():
        return None
    parts = json.loads(_saved_path().read_text())
    return (info, parts) if _healthy(parts["operator"]["health"]) else None


def up() -> int:
    started = time.monotonic()
    found = _running()
    if found is None:
        _stop_parts()
        progress("control plane: built from Go modules on first use (about 20 min on 2 "
                 "cores), then started")
        info = cluster.ensure_up()
        progress(f"control plane ready at {info.server}; installing the CRDs")
        _install_crds(info)
        info.kubectl("create", "namespace", NAMESPACE, check=False)
        parts = _start_parts(info)
        _saved_path().write_text(json.dumps(parts))
        progress(f"applying RecModel {MODEL} and ModelVersion {VERSION}; waiting for Ready")
        _apply_model(info, parts)
    else:
        info, parts = found
        progress("already running")
    _wait(info)
    print(_table(info, parts))
    print(_serve(parts))
    print(f"\nready in {time.monotonic() - started:.0f}s. Try:\n"
          f"  KUBECONFIG={info.kubeconfig} {info.kubectl_bin} -n {NAMESPACE} get rmodel,mv,"
          "endpointslices\n  recop-dev down      # stop everything")
    return 0


def status() -> int:
    found = _running()
    if found is None:
        print("not running: `recop-dev up` starts it")
        return 1
    print(_table(*found))
    return 0


def _stop_parts() -> None:
    if _saved_path().exists():
        for pid_file in json.loads(_saved_path().read_text())["pid_files"]:
            stop_pid_file(Path(pid_file))
        _saved_path().unlink()


def down() -> int:
    _stop_parts()
    cluster.down()
    shutil.rmtree(_root(), ignore_errors=True)
    progress("stopped; state removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`recop-dev`: the dev stack's own entry point, so no product module imports it."""
    import argparse

    parser = argparse.ArgumentParser(prog="recop-dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "status", "down"])
    action = parser.parse_args(argv).action
    return {"up": up, "status": status, "down": down}[action]()


if __name__ == "__main__":
    sys.exit(main())
