"""RecModel controller at scale, on the real local control plane with KWOK nodes.

For N models (1 and 200 by default): the time from `kubectl apply` to every model's phase
Ready (every replica scheduled and ready on KWOK nodes), the API writes the operator sends
per model once they are settled (goal: 0), and the operator's resident memory.

    python bench/recmodel_bench.py [--counts 1 200] [--settle 40]

Runs its own control plane in a state dir of its own and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def model(name: str, namespace: str) -> dict:
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "RecModel",
            "metadata": {"name": name, "namespace": namespace},
            # One pod per model: 200 of them fill the two KWOK CPU nodes (110 pods each),
            # and the 16 KWOK GPUs could not hold a Triton pod per model.
            "spec": {"tables": [{"name": "user", "dimension": 32, "rows": 100_000}],
                     "sharding": {"shards": 1, "replicasPerShard": 1},
                     "dense": {"modelName": "mlp", "replicas": 0, "gpusPerPod": 0,
                               "instanceGroups": [{"kind": "KIND_CPU"}]},
                     "storage": {"bucket": "bench"}}}


def api_calls(port: int) -> tuple[float, float]:
    """(reads, writes) the operator has sent to the API server (its own counters; Kopf's
    watches are not among them)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return tuple(sum(float(v) for v in re.findall(
        rf"^recop_kube_{what}_total\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))
        for what in ("reads", "writes"))


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def run(info, count: int, settle: float) -> dict:
    from e2e.support import OperatorProcess

    namespace = f"bench-{count}"
    info.kubectl("create", "namespace", namespace)
    operator = OperatorProcess(info.kubeconfig, namespace, name=f"bench-operator-{count}")
    try:
        docs = "\n---\n".join(json.dumps(model(f"m{i:03d}", namespace)) for i in range(count))
        started = time.monotonic()
        info.kubectl("apply", "--server-side", "-f", "-", input=docs, timeout=600)
        ready_at: dict[str, float] = {}
        while len(ready_at) < count:
            items = json.loads(info.kubectl("-n", namespace, "get", "recmodels", "-o", "json",
                                            timeout=120).stdout)["items"]
            now = time.monotonic() - started
            for item in items:
                if item.get("status", {}).get("phase") == "Ready":
                    ready_at.setdefault(item["metadata"]["name"], now)
            if now > 1200:
                raise TimeoutError(f"{len(ready_at)}/{count} Ready after 20 min")
            time.sleep(0.5)
        reads, writes = api_calls(operator.metrics_port)
        time.sleep(settle)
        settled_reads, settled_writes = (
            after - before for after, before in zip(api_calls(operator.metrics_port),
                                                    (reads, writes), strict=True))
        return {"count": count, "all_ready_s": max(ready_at.values()),
                "median_ready_s": statistics.median(ready_at.values()),
                "reads_per_model": reads / count, "writes_per_model": writes / count,
                "reads_per_settled_model": settled_reads / count,
                "writes_per_settled_model": settled_writes / count,
                "operator_rss_mib": rss_mib(operator.proc.pid)}
    finally:
        operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 200])
    parser.add_argument("--settle", type=float, default=40,
                        help="seconds to count writes after all are Ready")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RECMODEL.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ["RECOP_STATE"] = tempfile.mkdtemp(prefix="recop-bench-")
    from devstack import cluster
    from devstack.cluster_nodes import CPU_NODES, cpu_node
    from recop import crdgen

    info = cluster.ensure_up()
    try:
        for path in sorted(crdgen.CRD_DIR.glob("*.yaml")):
            info.kubectl("apply", "--server-side", "-f", str(path))
        info.kubectl("wait", "--for=condition=Established", "--all", "crd", "--timeout=60s")
        # One pod per model; a KWOK node takes 110 pods and 32 cores of requests: a node
        # per 50 models leaves room for the largest count.
        extra = max(0, -(-max(args.counts) // 50) - CPU_NODES)
        info.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": [cpu_node(f"kwok-bench-cpu-{i}") for i in range(extra)]}))
        results = [run(info, count, args.settle) for count in args.counts]
    finally:
        cluster.down()
    rows = "\n".join(
        f"| {r['count']} | {r['median_ready_s']:.1f} s | {r['all_ready_s']:.1f} s | "
        f"{r['reads_per_model']:.1f} / {r['writes_per_model']:.1f} | "
        f"{r['reads_per_settled_model']:.2f} / {r['writes_per_settled_model']:.2f} | "
        f"{r['operator_rss_mib']:.0f} MiB |"
        for r in results)
    text = (
        "# RecModel controller at scale\n\n"
        f"Produced by `python bench/recmodel_bench.py --counts {' '.join(map(str, args.counts))}"
        f" --settle {args.settle:g}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"({platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end). Each model: 1 shard x 1 replica and a Triton "
        "Deployment scaled to 0, i.e. 2 Deployments, a PDB, 2 Services, a NetworkPolicy "
        "and one pod on a KWOK node; one operator process (standalone, one namespace). "
        "Ready = every replica ready. Reads and writes are the operator's own counts of "
        "its API calls (recop_kube_reads_total, recop_kube_writes_total; Kopf's watches are "
        "not counted): from the apply until every model was Ready, and over "
        f"{args.settle:g} s after that.\n\n"
        "| models | apply to Ready, median | apply to all Ready | reads / writes per model "
        "until all Ready | reads / writes per settled model | operator RSS |\n"
        "|---|---|---|---|---|---|\n" + rows + "\n")
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
