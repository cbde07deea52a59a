"""`recop dev up|status|down`: RecOp on an embedded local default, no cluster of yours.

`up` starts the real local control plane (API server, etcd, controller-manager,
scheduler, KWOK CPU and GPU nodes), installs the CRDs, runs the operator as a local
process, applies a demo RecModel and waits until it is Ready, then prints what runs
where. It is idempotent: a second `up` reuses what runs and what is cached. `down`
stops every process it started and removes its state.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from recop import crdgen
from recop.api import RESOURCES
from recop.local import cluster
from recop.local.common import (
    ManagedProcess,
    free_port,
    progress,
    remove_state,
    state_dir,
    stop_pid_file,
)

NAME = "dev"
NAMESPACE = "recop-demo"
MODEL = "demo"

DEMO = {
    "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
    "metadata": {"name": MODEL, "namespace": NAMESPACE},
    "spec": {
        "tables": [{"name": "user", "dimension": 16, "rows": 100_000, "dtype": "fp16"},
                   {"name": "item", "dimension": 16, "rows": 20_000}],
        "sharding": {"shards": 2, "replicasPerShard": 2},
        "dense": {"modelName": "ranker", "replicas": 1, "gpusPerPod": 1},
        "storage": {"bucket": "recop-models", "prefix": "demo/"},
    },
}


def _operator_info() -> Path:
    return state_dir(NAME) / "operator.json"


def _healthy(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except OSError:
        return False
    return True


def _ensure_operator(info: cluster.ClusterInfo) -> dict:
    path = _operator_info()
    if path.exists():
        saved = json.loads(path.read_text())
        if _healthy(saved["health_port"]):
            return saved
        stop_pid_file(Path(saved["pid_file"]))
    ports = {"metrics_port": free_port(), "health_port": free_port()}
    process = ManagedProcess("operator", [
        sys.executable, "-m", "recop.cli", "operator", "--standalone",
        f"--liveness=http://127.0.0.1:{ports['health_port']}/healthz",
    ], env={"KUBECONFIG": str(info.kubeconfig),
            "RECOP_METRICS_PORT": str(ports["metrics_port"]),
            "RECOP_METRICS_ADDR": "127.0.0.1"}, directory=state_dir(NAME))
    deadline = time.monotonic() + 60
    while not _healthy(ports["health_port"]):
        if process.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the operator did not start:\n{process.log_tail()}")
        time.sleep(0.3)
    saved = {**ports, "pid_file": str(process.pid_path), "log": str(process.log_path)}
    path.write_text(json.dumps(saved))
    return saved


def _install_crds(info: cluster.ClusterInfo) -> None:
    docs = "---\n".join(crdgen.render(r) for r in RESOURCES)
    info.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=recop-dev",
                 "-f", "-", input=docs)
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *(f"crd/{r.crd_name}" for r in RESOURCES), timeout=90)


def up() -> int:
    started = time.monotonic()
    progress("control plane: building on first use (about 20 min on 2 cores), then starting")
    info = cluster.ensure_up()
    progress(f"control plane ready at {info.server}; installing the CRDs")
    _install_crds(info)
    info.kubectl("create", "namespace", NAMESPACE, check=False)
    progress("starting the operator")
    operator = _ensure_operator(info)
    progress(f"applying RecModel {NAMESPACE}/{MODEL} and waiting until it is Ready")
    info.kubectl("apply", "--server-side", "--field-manager=recop-dev", "-f", "-",
                 input=json.dumps(DEMO))
    for condition in ("condition=Ready", "jsonpath={.status.phase}=Ready"):
        info.kubectl("-n", NAMESPACE, "wait", f"--for={condition}", f"recmodel/{MODEL}",
                     "--timeout=180s", timeout=210)
    print(_table(info, operator))
    print(f"\nready in {time.monotonic() - started:.0f}s. Try:\n"
          f"  KUBECONFIG={info.kubeconfig} {info.kubectl_bin} -n {NAMESPACE} "
          "get rmodel,deploy,svc,pods -o wide\n"
          f"  recop dev down      # stop everything")
    return 0


def _table(info: cluster.ClusterInfo, operator: dict) -> str:
    model = json.loads(info.kubectl("-n", NAMESPACE, "get", "recmodel", MODEL,
                                    "-o", "json").stdout)
    pods = json.loads(info.kubectl("-n", NAMESPACE, "get", "pods", "-l",
                                   f"recop.dev/model={MODEL}", "-o", "json").stdout)["items"]
    rows = [("control plane", info.server, "kube-apiserver, etcd, controller-manager, "
             "scheduler, KWOK"),
            ("operator", f"127.0.0.1:{operator['metrics_port']}/metrics",
             f"log {operator['log']}")]
    rows += [(p["metadata"]["name"], p["spec"].get("nodeName", "-"), p["status"].get("phase"))
             for p in sorted(pods, key=lambda p: p["metadata"]["name"])]
    status = model.get("status", {})
    rows.append((f"recmodel/{MODEL}", status.get("phase", "-"),
                 f"{status.get('readyShards')}/{status.get('shards')} shards, "
                 f"{status.get('tritonReadyReplicas')} Triton"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:<34}  {c}" for a, b, c in rows)


def status() -> int:
    info = cluster.running()
    if info is None:
        print("not running: `recop dev up` starts it")
        return 1
    saved = json.loads(_operator_info().read_text()) if _operator_info().exists() else None
    if saved is None or not _healthy(saved["health_port"]):
        print(f"control plane at {info.server}; the operator is not running")
        return 1
    print(_table(info, saved))
    return 0


def down() -> int:
    if _operator_info().exists():
        stop_pid_file(Path(json.loads(_operator_info().read_text())["pid_file"]))
    remove_state(NAME)
    cluster.down()
    root = Path(os.environ.get("RECOP_STATE", "/tmp/recop-state"))
    (root / "cluster.lock").unlink(missing_ok=True)
    if root.exists() and not any(root.iterdir()):
        root.rmdir()
    progress("stopped; state removed")
    return 0
