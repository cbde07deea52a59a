"""`recop-dev up|status|down`: RecOp end to end on the local default, on real pods.

`up` starts the local control plane (devstack.cluster) and its real node (devstack.node);
builds the operator, embedding-server and CPU Triton images from the repository's
Dockerfiles (devstack.images) and loads them into the node; starts MinIO, a Kafka broker
and Prometheus on this machine, where the pods reach them at netns.HOST_IP; installs the
chart (charts/recop) with the real helm binary, so the operator runs as its two peered
pods under the chart's ServiceAccount; writes a small generated checkpoint and the dense
model repository to S3; applies a RecModel whose shard servers and Triton are Managed
pods, then a full ModelVersion. It returns once the version is Active and the model
Ready, printing the pods, what runs where, a lookup answered by the shard pods (their
ready endpoints) and an inference answered by the Triton pod (through its Service), and
how long each phase and each pod took. A second `up` finds it running and only prints.
`down` uninstalls the release and stops the node, the control plane and every process
it started.

The demo RecModel is a production one but for where its pods go:
- `embeddingServer.image` and `dense.image` name the images built here (nothing can be
  pulled; the defaults name public ones), and CPU requests are small (100m): the real
  node has about 1.9 allocatable cores for the two operator pods, both shards and Triton.
- The dense part's GPU placement comes from `dense.gpusPerPod` (default 1: an
  nvidia.com/gpu limit, the GPU pools' node label and toleration) and
  `dense.instanceGroups[].kind` (default KIND_GPU). The local default overrides them with
  `gpusPerPod: 0` and `KIND_CPU`, and `densePlacement`, like `embeddingPlacement`, is the
  real node's nodeSelector and toleration (devstack.node.SELECTOR and TOLERATION). On a
  cluster with GPUs, drop those four fields and the image overrides.
- The chart gets the same nodeSelector and toleration, the local operator image, a 50m
  CPU request and `prometheus.url`.

Prometheus scrapes the pods' IPs as they were when `up` finished; the operator reads it
at its forwarder on netns.HOST_IP. `up` applies the ModelVersion once the Triton pod is
Ready, to time each pod's start (the controller would wait for it too: WaitingForTriton).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from controllers.common import labels as L
from controllers.recmodel.objects import TRITON_GRPC, TRITON_HTTP
from devstack import cluster, images, netns, node
from devstack import kafka as local_kafka
from devstack import minio as local_minio
from devstack import prometheus as local_prometheus
from devstack import triton as local_triton
from devstack.common import pid_alive, progress, stop_pid_file
from devstack.external import s3_secret
from embedding.predict.contract import INFER_PATH
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
# Not the e2e tests' release name; still, one RecOp per cluster (the chart's peering).
RELEASE = "recop-demo"
RELEASE_NAMESPACE = "recop-system"
CHART = Path(__file__).resolve().parent.parent / "charts" / "recop"
IMAGES = ("operator", "embedding-server", "triton-cpu")
PLACEMENT = {"nodeSelector": node.SELECTOR, "tolerations": [node.TOLERATION]}
SMALL_CPU = {"requests": {"cpu": "100m"}}
LOOKUP_PORT = 8500
METRICS_PORT = 9100
OPERATOR_METRICS = 8080


def _root() -> Path:
    return Path(os.environ.get("RECOP_STATE", "/tmp/recop-state"))


def _saved_path() -> Path:
    return _root() / "dev.json"


def _apply(info: cluster.ClusterInfo, obj: dict) -> None:
    info.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=recop-dev",
                 "-f", "-", input=json.dumps(obj))


def _get(info: cluster.ClusterInfo, *args: str) -> dict:
    return json.loads(info.kubectl("get", *args, "-o", "json").stdout)


def _wait_for(condition: Callable[[], object], timeout: float, what: str,
              why: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s\n{why()}")
        time.sleep(1)
    return result


class _Phases:
    """Seconds per phase of a cold `up`, printed and kept for the warm ones."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self._mark, 1)
        self._mark = now
        progress(f"{phase}: {self.seconds[phase]:.1f}s")


def _install_crds(info: cluster.ClusterInfo) -> None:
    # Helm installs the chart's crds/ only when absent and never upgrades them.
    docs = "---\n".join(crdgen.render(r) for r in RESOURCES)
    info.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=recop-dev",
                 "-f", "-", input=docs)
    info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *(f"crd/{r.crd_name}" for r in RESOURCES), timeout=90)


def _images() -> dict[str, str]:
    refs = {name: images.build(name) for name in IMAGES}
    node.load(*refs.values())
    return refs


def _write_s3(s3) -> None:
    """The shards' full checkpoint (s3://BUCKET/v1) and Triton's model repository
    (BUCKET/dense, versions 1 and 2 of the test model)."""
    from embedding.checkpoint import CheckpointWriter

    rng = np.random.default_rng(7)
    ids = np.arange(ROWS, dtype=np.int64)
    tables = {name: (ids, rng.normal(0, 0.1, (ROWS, DIM)).astype(np.float32))
              for name in ("user", "item")}
    s3.create_bucket(Bucket=BUCKET)
    CheckpointWriter(s3, f"s3://{BUCKET}/v1", SHARDS).write_full(1, tables)
    for path in local_triton.TEST_MODELS.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            key = f"dense/{path.relative_to(local_triton.TEST_MODELS).as_posix()}"
            s3.upload_file(str(path), BUCKET, key)


def _start_parts() -> tuple[dict, local_prometheus.PrometheusHandle]:
    """MinIO and Prometheus on loopback with a forwarder each on the host end of the
    node's veth; Kafka listening and advertising there itself, since clients connect to
    the address it advertises."""
    minio = local_minio.start()
    minio_forward = node.expose(minio.port)
    kafka = local_kafka.start(host=netns.HOST_IP)
    prometheus = local_prometheus.start()
    prometheus_forward = node.expose(prometheus.port)
    _write_s3(minio.client())
    asyncio.run(local_kafka.create_topic(kafka.bootstrap, TOPIC, SHARDS))
    return {
        "pid_files": [str(p.pid_path) for p in (minio_forward, prometheus_forward,
                                                 minio.process, kafka.process,
                                                 prometheus.process)],
        "minio": minio.endpoint, "s3": {"id": minio.access_key, "secret": minio.secret_key},
        "s3_for_pods": f"http://{netns.HOST_IP}:{minio.port}",
        "kafka": kafka.bootstrap,
        "prometheus": prometheus.url,
        "prometheus_for_pods": f"http://{netns.HOST_IP}:{prometheus.port}",
    }, prometheus


def _install_chart(info: cluster.ClusterInfo, image: str, prometheus_url: str) -> None:
    repository, tag = image.rsplit(":", 1)
    info.helm("upgrade", "--install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE,
              "--create-namespace", f"--set=image.repository={repository}",
              f"--set=image.tag={tag}", "--set=resources.requests.cpu=50m",
              f"--set=prometheus.url={prometheus_url}",
              f"--set-json=nodeSelector={json.dumps(node.SELECTOR)}",
              f"--set-json=tolerations={json.dumps([node.TOLERATION])}")
    rollout = info.kubectl("-n", RELEASE_NAMESPACE, "rollout", "status",
                           f"deployment/{RELEASE}", "--timeout=180s", timeout=210,
                           check=False)
    if rollout.returncode != 0:
        raise RuntimeError(f"the chart's operator pods did not become Ready:\n"
                           f"{rollout.stderr}\n{_why(info)}")


def _recmodel(parts: dict, refs: dict[str, str]) -> dict:
    return {
        "apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": {
            "tables": [{"name": "user", "dimension": DIM, "rows": ROWS},
                       {"name": "item", "dimension": DIM, "rows": ROWS}],
            "sharding": {"shards": SHARDS, "replicasPerShard": 1},
            "embeddingServer": {"image": refs["embedding-server"], "resources": SMALL_CPU,
                                "lookupPort": LOOKUP_PORT, "metricsPort": METRICS_PORT},
            "embeddingPlacement": PLACEMENT,
            "dense": {"modelName": "mlp", "image": refs["triton-cpu"], "replicas": 1,
                      "gpusPerPod": 0, "maxBatchSize": 64,
                      "instanceGroups": [{"kind": "KIND_CPU"}], "resources": SMALL_CPU,
                      "entryModel": {"enabled": True}},
            "densePlacement": PLACEMENT,
            "storage": {"bucket": BUCKET, "endpoint": parts["s3_for_pods"],
                        "accessKeyId": {"name": "demo-s3", "key": "id"},
                        "secretAccessKey": {"name": "demo-s3", "key": "secret"}},
            "stream": {"brokers": [parts["kafka"]], "topic": TOPIC},
        }}


def _pods(info: cluster.ClusterInfo, namespace: str, selector: str) -> list[dict]:
    return [p for p in _get(info, "-n", namespace, "pods", "-l", selector)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions") or [])


def _component(component: str) -> str:
    return f"{L.MODEL}={MODEL},{L.COMPONENT}={component}"


def _apply_model(info: cluster.ClusterInfo, parts: dict, refs: dict[str, str],
                 phases: _Phases) -> None:
    _apply(info, s3_secret(NAMESPACE, parts["s3"]["id"], parts["s3"]["secret"], "demo-s3"))
    _apply(info, _recmodel(parts, refs))
    _wait_for(lambda: [p for p in _pods(info, NAMESPACE, _component(L.TRITON)) if _ready(p)],
              240, "the Triton pod Ready", lambda: _why(info))
    phases.done("Triton pod Ready")
    _apply(info, {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
                  "metadata": {"name": VERSION, "namespace": NAMESPACE},
                  "spec": {"model": MODEL, "kind": "full", "source": f"s3://{BUCKET}/v1",
                           "denseModelVersion": 1}})
    _wait_active(info)
    phases.done("ModelVersion Active, model Ready")


def _wait_active(info: cluster.ClusterInfo) -> None:
    def phase() -> str | None:
        return _get(info, "-n", NAMESPACE, "modelversion", VERSION).get(
            "status", {}).get("phase")

    _wait_for(lambda: phase() == "Active", 240, f"modelversion/{VERSION} Active",
              lambda: _why(info))
    info.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"recmodel/{MODEL}",
                 "--timeout=120s", timeout=150)


def _scrape_pods(info: cluster.ClusterInfo,
                 prometheus: local_prometheus.PrometheusHandle) -> None:
    """Prometheus' targets: the pods' metrics ports at their IPs, reached through the
    node's veth."""
    groups = {
        "embedding": (_pods(info, NAMESPACE, _component(L.EMBEDDING)), METRICS_PORT),
        "triton": (_pods(info, NAMESPACE, _component(L.TRITON)), 8002),
        "operator": (_pods(info, RELEASE_NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"),
                     OPERATOR_METRICS),
    }
    for group, (pods, port) in groups.items():
        prometheus.set_targets(group, [f"{p['status']['podIP']}:{port}" for p in pods],
                               {"component": group})


def _why(info: cluster.ClusterInfo) -> str:
    """The pods, the demo's recent events and the version's status, for a failed wait."""
    pods = info.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    events = info.kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp",
                          check=False).stdout.splitlines()[-15:]
    version = info.kubectl("-n", NAMESPACE, "get", "modelversion", VERSION, "-o",
                           "jsonpath={.status}", check=False).stdout
    return f"{pods}\nevents:\n" + "\n".join(events) + f"\nmodelversion status: {version}"


def _serve(info: cluster.ClusterInfo) -> str:
    """A lookup on the shard pods, at the ready endpoints of each shard's headless
    Service, and an inference on the Triton pod through its Service's ClusterIP, with
    the rows the lookup returned."""
    from tritonclient.grpc import InferenceServerClient, InferInput

    from embedding.client import EmbeddingClient

    shards = []
    for shard in range(SHARDS):
        slices = _get(info, "-n", NAMESPACE, "endpointslices", "-l",
                      f"{L.SERVICE_NAME}={L.embedding_name(MODEL, shard)}")["items"]
        shards.append([f"{address}:{LOOKUP_PORT}" for s in slices
                       for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                       for address in e["addresses"]])
    ids = np.array([3, 1_000, 19_999], dtype=np.int64)
    with EmbeddingClient(shards) as client:
        rows = client.lookup({"user": ids, "item": ids})
    inputs = []
    for name in ("user", "item"):
        tensor = InferInput(name, list(rows.values[name].shape), "FP32")
        tensor.set_data_from_numpy(rows.values[name])
        inputs.append(tensor)
    service = _get(info, "-n", NAMESPACE, "service", L.triton_name(MODEL))["spec"]["clusterIP"]
    triton = f"{service}:{TRITON_GRPC}"
    scores = InferenceServerClient(triton).infer("mlp", inputs, model_version="1") \
        .as_numpy("score")

    # The same answer in one call: the entry model looks the ids up and runs mlp.
    url = f"http://{service}:{TRITON_HTTP}{INFER_PATH}"
    body = json.dumps({"inputs": [
        {"name": t, "datatype": "INT64", "shape": [len(ids)], "data": ids.tolist()}
        for t in ("user", "item")]}).encode()

    def ask() -> dict | None:
        """The answer, or None while the entry model still resolves the shard pods."""
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
        except urllib.error.HTTPError as err:
            if err.code != 503:
                raise
            return None

    predicted = _wait_for(ask, 30, "a prediction from the entry model", lambda: (
        "the predict model answers 503: does it resolve the shard Services?"))
    np.testing.assert_allclose(np.ravel(predicted["score"]), scores.ravel(), rtol=1e-5)

    def rounded(values) -> list[float]:
        return [round(float(v), 4) for v in values]

    answered = ", ".join(a for addresses in shards for a in addresses)
    return (f"lookup   ids {ids.tolist()} -> version {rows.version}, user[0][:4] = "
            f"{rounded(rows.values['user'][0][:4])}  (shard pods {answered})\n"
            f"infer    mlp(user, item) -> scores {rounded(scores.ravel())}  "
            f"(Service {L.triton_name(MODEL)} {triton})\n"
            f"predict  ids {ids.tolist()} -> scores {rounded(np.ravel(predicted['score']))} "
            f"at embedding version {predicted['embedding_version'][0]}, dense version "
            f"{predicted['dense_version'][0]}  (POST {url})")


def _seconds(since: str, until: str | None) -> str:
    if not until:
        return "-"
    parse = datetime.fromisoformat
    return f"{(parse(until) - parse(since)).total_seconds():.0f}s"


def _pod_times(info: cluster.ClusterInfo) -> str:
    """Per pod: created to container started, and to Ready (a shard's readiness waits for
    the version it loads, so its Ready includes the ModelVersion's load)."""
    rows = [("pod", "container", "started", "Ready")]
    for namespace, selector in ((RELEASE_NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"),
                                (NAMESPACE, f"{L.MODEL}={MODEL}")):
        for pod in _pods(info, namespace, selector):
            status = pod.get("status", {})
            container = (status.get("containerStatuses") or [{}])[0]
            started = container.get("state", {}).get("running", {}).get("startedAt")
            ready = next((c["lastTransitionTime"] for c in status.get("conditions") or []
                          if c["type"] == "Ready" and c["status"] == "True"), None)
            created = pod["metadata"]["creationTimestamp"]
            rows.append((f"{namespace}/{pod['metadata']['name']}",
                         container.get("containerID", "-")[:25],
                         _seconds(created, started), _seconds(created, ready)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True))
                     for r in rows)


def _table(info: cluster.ClusterInfo, parts: dict) -> str:
    model = _get(info, "-n", NAMESPACE, "recmodel", MODEL).get("status", {})
    version = _get(info, "-n", NAMESPACE, "modelversion", VERSION).get("status", {})
    operators = _pods(info, RELEASE_NAMESPACE, f"app.kubernetes.io/instance={RELEASE}")
    triton = _pods(info, NAMESPACE, _component(L.TRITON))
    shards = sorted(_pods(info, NAMESPACE, _component(L.EMBEDDING)),
                    key=lambda p: p["metadata"]["labels"].get(L.SHARD, ""))
    rows = [
        ("control plane", info.server, "kube-apiserver, etcd, controller-manager, "
         "scheduler, KWOK (2 CPU, 2 GPU nodes)"),
        ("real node", f"{node.NODE_NAME} {netns.NODE_IP}",
         f"kubelet, containerd, kube-proxy, CoreDNS; pods {netns.POD_CIDR}"),
        ("operator", f"helm {RELEASE_NAMESPACE}/{RELEASE}",
         ", ".join(f"{p['metadata']['name']} {p['status'].get('podIP')}" for p in operators)),
        ("S3 (MinIO)", parts["minio"], f"bucket {BUCKET}; pods: {parts['s3_for_pods']}"),
        ("Kafka", parts["kafka"], f"topic {TOPIC}"),
        ("Prometheus", parts["prometheus"],
         f"scrapes the pods; operator: {parts['prometheus_for_pods']}"),
        *((f"Triton {p['metadata']['name']}", f"{p['status'].get('podIP')}:{TRITON_GRPC}",
           "model mlp, KIND_CPU") for p in triton),
        *((f"shard {p['metadata']['labels'].get(L.SHARD)} {p['metadata']['name']}",
           f"{p['status'].get('podIP')}:{LOOKUP_PORT}", "embedding server") for p in shards),
        (f"recmodel/{MODEL}", model.get("phase", "-"),
         f"{model.get('readyShards')}/{model.get('shards')} shards, active "
         f"{model.get('activeVersion')}"),
        (f"modelversion/{VERSION}", version.get("phase", "-"), version.get("reason") or ""),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:<32}  {c}" for a, b, c in rows)


def _print_all(info: cluster.ClusterInfo, parts: dict) -> None:
    print(info.kubectl("get", "pods", "-A", "-o", "wide").stdout)
    print(_pod_times(info), end="\n\n")
    print(_table(info, parts))
    print(_serve(info))
    print("\nphases of the cold `up`: " + ", ".join(
        f"{phase} {seconds:.1f}s" for phase, seconds in parts["phases"].items()))


def _running() -> tuple[cluster.ClusterInfo, dict] | None:
    info = cluster.running()
    if info is None or not _saved_path().exists() or not node.running(info):
        return None
    parts = json.loads(_saved_path().read_text())
    # "phases" is saved once a cold `up` got to the end.
    if "phases" not in parts or not all(pid_alive(Path(p)) for p in parts["pid_files"]):
        return None
    ready = info.kubectl("-n", RELEASE_NAMESPACE, "get", "deployment", RELEASE, "-o",
                         "jsonpath={.status.readyReplicas}", check=False)
    return (info, parts) if ready.returncode == 0 and ready.stdout.strip() == "2" else None


def _cold_up() -> tuple[cluster.ClusterInfo, dict]:
    _stop_parts()
    phases = _Phases()
    progress("control plane: built from Go modules on first use (about 20 min on 2 "
             "cores), then started")
    info = cluster.ensure_up()
    phases.done("control plane")
    node.ensure_up(info)
    phases.done("real node")
    progress("building the images (minutes when the tree changed) and loading them")
    refs = _images()
    phases.done("image build and load")
    progress("S3 (MinIO), Kafka and Prometheus, reachable from the pods at "
             f"{netns.HOST_IP}")
    parts, prometheus = _start_parts()
    _saved_path().write_text(json.dumps(parts))
    phases.done("S3, Kafka, Prometheus")
    _install_crds(info)
    # A model left by an earlier `up` points at an S3 and a broker that are gone.
    info.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                 timeout=180)
    info.kubectl("create", "namespace", NAMESPACE)
    progress(f"helm: installing {CHART.name} as {RELEASE_NAMESPACE}/{RELEASE}")
    _install_chart(info, refs["operator"], parts["prometheus_for_pods"])
    phases.done("helm install, operator pods Ready")
    progress(f"applying RecModel {MODEL}; ModelVersion {VERSION} once Triton is Ready")
    _apply_model(info, parts, refs, phases)
    _scrape_pods(info, prometheus)
    parts["phases"] = phases.seconds
    _saved_path().write_text(json.dumps(parts))
    return info, parts


def up() -> int:
    started = time.monotonic()
    found = _running()
    if found is None:
        info, parts = _cold_up()
    else:
        info, parts = found
        progress("already running")
        _wait_active(info)
    _print_all(info, parts)
    print(f"\nready in {time.monotonic() - started:.0f}s. Try:\n"
          f"  KUBECONFIG={info.kubeconfig} {info.kubectl_bin} get pods -A -o wide\n"
          f"  KUBECONFIG={info.kubeconfig} {info.kubectl_bin} -n {NAMESPACE} get rmodel,mv\n"
          "  recop-dev down      # stop everything")
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
    info = cluster.running()
    if info is not None:
        # The operator pods leave the peering; the node's `down` removes every pod left.
        info.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout=90s",
                  check=False, timeout=120)
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
