"""The ABTest controller on the real control plane: Gateway API routes with the ramped
weights and per-arm header rules, the cost model's placement on the arms' Triton pods,
and a guardrail breach (from a real Prometheus) that stops a variant.

No gateway controller runs here: the API server stores and validates the routes against
the Gateway API CRDs, which is what the operator is responsible for.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controllers import labels as L
from e2e.support import OperatorProcess, get_json, wait_for
from recop.local import gateway_api, prometheus
from recop.local.common import LOOPBACK
from recop.quantity import parse

NS = "e2e-abtest"
# Error ratio per arm, as the arms' servers would export it; the test changes it.
ERRORS = {"control": 0.0, "wide": 0.0, "deep": 0.0}
CTR = {"control": 0.10, "wide": 0.10, "deep": 0.12}


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        text = "".join(f'recop_e2e_error_ratio{{arm="{a}"}} {v}\n' for a, v in ERRORS.items())
        text += "".join(f'recop_e2e_ctr{{arm="{a}"}} {v}\n' for a, v in CTR.items())
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def prom():
    server = ThreadingHTTPServer((LOOPBACK, 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handle = prometheus.start()
    handle.set_targets("e2e-abtest", [f"{LOOPBACK}:{server.server_port}"], {"job": "arms"})
    handle.wait_for_target("job", "arms")
    yield handle
    handle.stop()
    server.shutdown()


@pytest.fixture(scope="module")
def operator(cluster, prom):
    for path in gateway_api.build():
        cluster.kubectl("apply", "--server-side", "--force-conflicts",
                        "--field-manager=recop-e2e", "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/httproutes.gateway.networking.k8s.io",
                    "crd/grpcroutes.gateway.networking.k8s.io", timeout=90)
    cluster.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                    timeout=180)
    cluster.kubectl("create", "namespace", NS)
    proc = OperatorProcess(cluster.kubeconfig, NS, env={
        "RECOP_PROMETHEUS_URL": prom.url, "RECOP_ABTEST_INTERVAL": "2"})
    yield proc
    proc.stop()
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


ABTEST = {
    "apiVersion": "serving.recop.dev/v1alpha1", "kind": "ABTest",
    "metadata": {"name": "ranker-exp", "namespace": NS},
    "spec": {
        "baseline": {"name": "control", "model": "ranker", "weight": 60},
        "variants": [{"name": "wide", "model": "ranker-wide", "weight": 20},
                     {"name": "deep", "model": "ranker-deep", "weight": 20}],
        "stickiness": {"salt": "e2e"},
        "ramp": {"initialPercent": 100, "interval": "1h"},
        "successMetric": {"name": "ctr", "query": 'ctr{arm="$arm"}'},
        "guardrails": [{"name": "errors", "threshold": 0.05,
                        "query": 'max(recop_e2e_error_ratio{arm="$arm"})'}],
    },
}


def weights(cluster, kind: str) -> dict[str, tuple[int, int]]:
    route = get_json(cluster, "-n", NS, kind, "ranker-exp")
    return {b["name"]: (b["port"], b["weight"])
            for b in route["spec"]["rules"][-1]["backendRefs"]}


def recmodel(name: str) -> dict:
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"tables": [{"name": "user", "dimension": 16, "rows": 10_000}],
                     "sharding": {"shards": 1, "replicasPerShard": 1},
                     "dense": {"modelName": "mlp", "replicas": 1, "gpusPerPod": 1,
                               "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}},
                     "storage": {"bucket": "recop-models", "prefix": f"{name}/"}}}


@pytest.fixture(scope="module")
def running(cluster, operator):
    for name in ("ranker", "ranker-wide", "ranker-deep"):
        cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                        input=json.dumps(recmodel(name)))
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(ABTEST))
    cluster.kubectl("-n", NS, "wait", "--for=jsonpath={.status.phase}=Running",
                    "abtest/ranker-exp", "--timeout=60s", timeout=90)
    return get_json(cluster, "-n", NS, "abtest", "ranker-exp")


def test_routes_carry_the_weights_and_header_rules(cluster, running):
    assert running["status"]["appliedWeights"] == {"control": 60, "wide": 20, "deep": 20}
    assert weights(cluster, "httproute") == {"ranker-triton": (8000, 60),
                                             "ranker-wide-triton": (8000, 20),
                                             "ranker-deep-triton": (8000, 20)}
    assert weights(cluster, "grpcroute") == {"ranker-triton": (8001, 60),
                                             "ranker-wide-triton": (8001, 20),
                                             "ranker-deep-triton": (8001, 20)}
    route = get_json(cluster, "-n", NS, "httproute", "ranker-exp")
    assert route["spec"]["parentRefs"][0]["name"] == "recop"
    headers = [r["matches"][0]["headers"][0]["value"] for r in route["spec"]["rules"][:-1]]
    assert headers == ["control", "wide", "deep"]


def placed(cluster) -> dict[str, dict]:
    status = get_json(cluster, "-n", NS, "abtest", "ranker-exp")["status"]
    return {a["model"]: a for a in status.get("assignments", [])}


def test_arm_pods_get_the_computed_resources_on_the_chosen_nodes(cluster, running):
    wait_for(lambda: len(placed(cluster)) == 3, timeout=60, what="three assignments")
    assignments = placed(cluster)
    assert assignments["ranker"]["dedicatedCores"] is True
    assert assignments["ranker"]["cpuMillicores"] % 1000 == 0
    sources = get_json(cluster, "-n", NS, "abtest", "ranker-exp")["status"]["costSources"]
    assert {(s["arm"], s["figure"]) for s in sources} >= {("wide", "qps"),
                                                          ("wide", "memory_bytes")}
    for model, a in assignments.items():
        assert a["node"].startswith("kwok-gpu-")

        def pod_on_node(model=model, a=a):
            pods = get_json(cluster, "-n", NS, "pods", "-l",
                            f"{L.MODEL}={model},{L.COMPONENT}={L.TRITON}")["items"]
            # The pod of the placed template (an earlier one may sit there by chance).
            return [p for p in pods if p["spec"].get("nodeName") == a["node"]
                    and p["spec"].get("nodeSelector", {}).get("kubernetes.io/hostname")
                    == a["node"] and not p["metadata"].get("deletionTimestamp")]

        pod = wait_for(pod_on_node, timeout=90, what=f"{model}'s Triton pod on {a['node']}")[0]
        resources = pod["spec"]["containers"][0]["resources"]
        assert parse(resources["requests"]["cpu"]) * 1000 == a["cpuMillicores"]
        assert parse(resources["limits"]["cpu"]) == parse(resources["requests"]["cpu"])
        assert parse(resources["limits"]["memory"]) == a["memoryBytes"]


def test_guardrail_breach_stops_the_variant(cluster, operator, running):
    ERRORS["wide"] = 0.5
    wait_for(lambda: get_json(cluster, "-n", NS, "abtest", "ranker-exp")["status"]
             .get("stoppedArms") == ["wide"], timeout=60,
             what=f"wide to be stopped (log: {operator.log_path})")
    status = get_json(cluster, "-n", NS, "abtest", "ranker-exp")["status"]
    assert status["appliedWeights"] == {"control": 80, "wide": 0, "deep": 20}
    assert status["phase"] == "Running"
    wait_for(lambda: weights(cluster, "httproute")["ranker-wide-triton"] == (8000, 0),
             timeout=30, what="the route to drop the stopped variant")
    assert weights(cluster, "httproute")["ranker-triton"] == (8000, 80)
    events = get_json(cluster, "-n", NS, "events",
                      "--field-selector=involvedObject.name=ranker-exp")["items"]
    assert any(e["reason"] == "GuardrailBreached" and "wide" in e["message"]
               for e in events)
    # Its placement is withdrawn: the baseline and the other variant keep theirs.
    wait_for(lambda: set(placed(cluster)) == {"ranker", "ranker-deep"}, timeout=30,
             what="the stopped variant's assignment to go")


def test_at_the_end_a_verdict_names_the_test_and_promotes_the_winner(cluster, operator):
    # Arms on models that do not exist: no placement, so the first test's stays alone.
    short = json.loads(json.dumps(ABTEST))
    short["metadata"]["name"] = "ctr-exp"
    spec = short["spec"]
    spec.pop("guardrails")
    spec["baseline"]["model"], spec["variants"][0]["model"] = "ctr-a", "ctr-b"
    spec["variants"][1]["model"] = "ctr-c"
    spec.update(duration="15s", successMetric={"name": "ctr",
                                               "query": 'max(recop_e2e_ctr{arm="$arm"})'},
                analysis={"test": "welch-t", "minSamples": 10, "onSuccess": "Promote"})
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(short))
    cluster.kubectl("-n", NS, "wait", "--for=jsonpath={.status.phase}=Concluded",
                    "abtest/ctr-exp", "--timeout=60s", timeout=90)
    status = get_json(cluster, "-n", NS, "abtest", "ctr-exp")["status"]
    verdict = status["verdict"]
    assert (verdict["winner"], verdict["action"], verdict["test"]) == \
        ("deep", "Promote", "welch-t")
    assert status["appliedWeights"] == {"control": 0, "wide": 0, "deep": 100}
    route = get_json(cluster, "-n", NS, "httproute", "ctr-exp")
    assert {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]} == \
        {"ctr-a-triton": 0, "ctr-b-triton": 0, "ctr-c-triton": 100}
    # The operator never writes the spec: promotion is the pipeline's to apply.
    assert get_json(cluster, "-n", NS, "abtest", "ctr-exp")["spec"]["baseline"]["model"] \
        == "ctr-a"
