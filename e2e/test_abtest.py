"""The ABTest controller on the real control plane: Gateway API routes with the ramped
weights and per-arm header rules, the cost model's placement on the arms' Triton pods,
a guardrail breach (from a real Prometheus) that stops a variant and scales its pods
away while the baseline's keep running, and verdicts that name their test.

No gateway controller runs here: the API server stores and validates the routes against
the Gateway API CRDs, which is what the operator is responsible for.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controllers.common import labels as L
from devstack import gateway_api, prometheus
from devstack.common import LOOPBACK
from e2e.support import REPO, OperatorProcess, get_json, wait_for
from recop.quantity import parse

NS = "e2e-abtest"
# Error ratio per arm, as the arms' servers would export it; the test changes it.
ERRORS = {"control": 0.0, "wide": 0.0, "deep": 0.0}
CTR = {"control": 0.10, "wide": 0.10, "deep": 0.12}
# Clicks per second per arm at 1,000 impressions per second: counters for the z-test.
CLICKS = {"control": 100, "wide": 100, "deep": 130}
STARTED = time.time()


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        text = "".join(f'recop_e2e_error_ratio{{arm="{a}"}} {v}\n' for a, v in ERRORS.items())
        text += "".join(f'recop_e2e_ctr{{arm="{a}"}} {v}\n' for a, v in CTR.items())
        elapsed = time.time() - STARTED
        text += "".join(f'recop_e2e_clicks_total{{arm="{a}"}} {v * elapsed}\n'
                        f'recop_e2e_impressions_total{{arm="{a}"}} {1000 * elapsed}\n'
                        for a, v in CLICKS.items())
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


def conditions(cluster, name: str = "ranker-exp") -> dict[str, dict]:
    status = get_json(cluster, "-n", NS, "abtest", name)["status"]
    return {c["type"]: c for c in status.get("conditions", [])}


def pods(cluster, model: str) -> dict[str, str]:
    """name -> uid of the model's pods (embedding servers and Triton) not being deleted."""
    items = get_json(cluster, "-n", NS, "pods", "-l", f"{L.MODEL}={model}")["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items
            if not p["metadata"].get("deletionTimestamp")}


def deployment_replicas(cluster, model: str) -> dict[str, int]:
    items = get_json(cluster, "-n", NS, "deployments", "-l", f"{L.MODEL}={model}")["items"]
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in items}


def test_arm_pods_get_the_computed_resources_on_the_chosen_nodes(cluster, running):
    wait_for(lambda: len(placed(cluster)) == 3, timeout=60, what="three assignments")
    assignments = placed(cluster)
    assert assignments["ranker"]["dedicatedCores"] is True
    assert assignments["ranker"]["cpuMillicores"] % 1000 == 0
    sources = get_json(cluster, "-n", NS, "abtest", "ranker-exp")["status"]["costSources"]
    assert {(s["arm"], s["figure"]) for s in sources} >= {("wide", "qps"),
                                                          ("wide", "memoryBytes")}
    # No Triton history in this Prometheus: each figure says it is the RecModel's request.
    assert {s["source"] for s in sources if s["figure"] == "memoryBytes"} == \
        {"spec:RecModel ranker", "spec:RecModel ranker-wide", "spec:RecModel ranker-deep"}
    wait_for(lambda: conditions(cluster).get("Ready", {}).get("status") == "True",
             timeout=60, what="the test to be Ready")
    c = conditions(cluster)
    assert (c["Placed"]["status"], c["Routed"]["status"]) == ("True", "True")
    assert c["Degraded"]["status"] == "False"
    generation = get_json(cluster, "-n", NS, "abtest", "ranker-exp")["metadata"]["generation"]
    assert {x["observedGeneration"] for x in c.values()} == {generation}
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


def test_guardrail_breach_stops_the_variant_and_frees_its_pods(cluster, operator, running):
    # Settled: one embedding server and one Triton pod each, the placed rollout done.
    wait_for(lambda: all(len(pods(cluster, m)) == 2 for m in ("ranker", "ranker-wide")),
             timeout=90, what="the arms' pods to settle")
    baseline_pods = pods(cluster, "ranker")
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
    breached = conditions(cluster)["GuardrailBreached"]
    assert breached["status"] == "True" and "stopped wide" in breached["message"]
    # Its resources are freed: every Deployment of its model at zero, its pods gone...
    status = get_json(cluster, "-n", NS, "abtest", "ranker-exp")["status"]
    assert status["freedModels"] == ["ranker-wide"]
    wait_for(lambda: set(deployment_replicas(cluster, "ranker-wide").values()) == {0},
             timeout=60, what=f"ranker-wide scaled to zero (log: {operator.log_path})")
    wait_for(lambda: not pods(cluster, "ranker-wide"), timeout=90,
             what="ranker-wide's pods to go")
    # ...while the baseline's pods were never replaced.
    assert pods(cluster, "ranker") == baseline_pods
    assert set(deployment_replicas(cluster, "ranker-deep").values()) == {1}


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
    concluded = conditions(cluster, "ctr-exp")["Concluded"]
    assert concluded["reason"] == "Promote" and concluded["message"].startswith("welch-t:")


def test_a_proportion_metric_is_decided_by_the_two_proportion_z_test(cluster, operator):
    counted = json.loads(json.dumps(ABTEST))
    counted["metadata"]["name"] = "ctr-counts"
    spec = counted["spec"]
    spec.pop("guardrails")
    spec["baseline"]["model"], spec["variants"][0]["model"] = "cnt-a", "cnt-b"
    spec["variants"][1]["model"] = "cnt-c"
    spec.update(duration="15s", successMetric={
        "name": "ctr",
        "successes": 'sum(increase(recop_e2e_clicks_total{arm="$arm"}[$window]))',
        "trials": 'sum(increase(recop_e2e_impressions_total{arm="$arm"}[$window]))'},
        analysis={"test": "two-proportion-z", "minSamples": 1000, "onSuccess": "Keep"})
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(counted))
    cluster.kubectl("-n", NS, "wait", "--for=jsonpath={.status.phase}=Concluded",
                    "abtest/ctr-counts", "--timeout=60s", timeout=90)
    verdict = get_json(cluster, "-n", NS, "abtest", "ctr-counts")["status"]["verdict"]
    assert (verdict["winner"], verdict["action"], verdict["test"]) == \
        ("deep", "Keep", "two-proportion-z")
    assert verdict["pValue"] < 0.05
    events = get_json(cluster, "-n", NS, "events",
                      "--field-selector=involvedObject.name=ctr-counts")["items"]
    assert any(e["reason"] == "Keep" and e["message"].startswith("two-proportion-z")
               for e in events)


def test_a_paused_replica_runs_no_periodic_checks(cluster, operator, prom):
    """Two cluster-wide replicas with Kopf peering, as the chart runs them: the first
    starts alone and ticks a ramping test; once a higher-priority one joins, Kopf pauses
    the first, and its ABTest task must stop writing too, though Kopf does not stop it."""
    operator.stop()  # the namespaced one: the replicas below act here from now on
    cluster.kubectl("apply", "--server-side", "--field-manager=recop-e2e", "-f",
                    str(REPO / "charts" / "recop" / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/clusterkopfpeerings.kopf.dev", timeout=90)
    cluster.kubectl("apply", "--server-side", "--field-manager=recop-e2e", "-f", "-",
                    input=json.dumps({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                      "metadata": {"name": "recop"}}))
    env = {"RECOP_PROMETHEUS_URL": prom.url, "RECOP_ABTEST_INTERVAL": "1"}
    replicas = []
    try:
        first = OperatorProcess(cluster.kubeconfig, name="abtest-first", env={
            **env, "POD_ID": "abtest-first"}, args=("--priority=100",))
        replicas.append(first)
        ramping = json.loads(json.dumps(ABTEST))
        ramping["metadata"]["name"] = "ramp-ha"
        ramping["spec"].pop("guardrails")
        for arm, model in zip((ramping["spec"]["baseline"], *ramping["spec"]["variants"]),
                              ("ha-a", "ha-b", "ha-c"), strict=True):
            arm["model"] = model
        ramping["spec"]["ramp"] = {"initialPercent": 1, "stepPercent": 1, "interval": "1s"}
        cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                        input=json.dumps(ramping))
        wait_for(lambda: first.writes() > 0 and get_json(cluster, "-n", NS, "abtest",
                                                          "ramp-ha").get("status"),
                 timeout=60, what=f"the first replica to tick (log: {first.log_path})")
        second = OperatorProcess(cluster.kubeconfig, name="abtest-second", env={
            **env, "POD_ID": "abtest-second"}, args=("--priority=200",))
        replicas.append(second)
        wait_for(lambda: "Pausing operations in favour of" in first.log(), timeout=60,
                 what="the first replica to pause")
        # Handlers already running when the pause came may finish their writes.
        seen = [-1.0]

        def quiet() -> bool:
            seen.append(first.writes())
            return seen[-1] == seen[-2]

        wait_for(quiet, timeout=60, interval=4, what="the paused replica to go quiet")

        def weights() -> dict:
            return get_json(cluster, "-n", NS, "abtest", "ramp-ha")["status"][
                "appliedWeights"]

        before = weights()
        wait_for(lambda: weights() != before, timeout=30, what="the ramp to go on")
        time.sleep(4)  # several of the paused replica's intervals
        assert first.writes() == seen[-1], "the paused replica wrote"
        assert second.writes() > 0
    finally:
        for replica in replicas:
            replica.stop()
        cluster.kubectl("delete", "clusterkopfpeering", "recop", "--ignore-not-found")
