"""What `kubectl recop` shows, from objects as the API returns them: pure functions, so
the tree and the tables are tested without a cluster and `-o json` is the same data the
text is drawn from."""

from __future__ import annotations

from controllers.common import labels as L

QUEUED = ("Pending", "Validating", "Loading")
GOOD = {"Ready", "Active", "Committed", "Loaded", "Running", "ready", "Concluded"}
BAD = {"Failed", "RolledBack", "Degraded", "not ready", "GuardrailBreached"}
_COLOURS = {"good": "\033[32m", "bad": "\033[31m", "busy": "\033[33m", "dim": "\033[2m"}
_RESET = "\033[0m"


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _roles(name: str, phase: str | None, model_status: dict) -> list[str]:
    roles = []
    if name == model_status.get("activeVersion"):
        roles.append("active")
    if name == model_status.get("lastCleanVersion"):
        roles.append("last clean")
    if phase in QUEUED and name != model_status.get("activeVersion"):
        roles.append("queued")
    if phase == "RolledBack":
        roles.append("rolled back")
    return roles


def versions_of(model: dict, versions: list[dict]) -> list[dict]:
    """The model's ModelVersions, newest first, with the part each plays."""
    name, model_status = model["metadata"]["name"], _status(model)
    mine = [v for v in versions if v["spec"].get("model") == name]
    mine.sort(key=lambda v: v["metadata"].get("creationTimestamp", ""), reverse=True)
    out = []
    for v in mine:
        status = _status(v)
        realtime = status.get("realtime") or {}
        out.append({
            "name": v["metadata"]["name"], "kind": v["spec"]["kind"],
            "phase": status.get("phase", "Pending"),
            "roles": _roles(v["metadata"]["name"], status.get("phase"), model_status),
            "number": status.get("embeddingVersion"),
            "reason": status.get("reason"), "message": status.get("message"),
            "freshnessP99Seconds": realtime.get("freshnessP99Seconds"),
        })
    return out


def _serving(key: str, versions: list[dict], active: str | None) -> tuple[str | None, list]:
    """The version `key` (host:adminPort) serves, and the others it is loading."""
    committed, loading = [], []
    for v in versions:
        for entry in _status(v).get("shards") or []:
            if entry.get("replica") != key:
                continue
            if entry.get("state") == "Committed":
                committed.append(v)
            elif entry.get("state") in ("Loading", "Loaded", "Pending", "Failed") and \
                    _status(v).get("phase") in QUEUED:
                loading.append({"version": v["metadata"]["name"], "state": entry["state"],
                                "fraction": entry.get("fraction", 0)})
    names = [v["metadata"]["name"] for v in committed]
    if active in names:
        return active, loading
    committed.sort(key=lambda v: _status(v).get("activatedAt") or "", reverse=True)
    return (names and committed[0]["metadata"]["name"]) or None, loading


def _memory(pod: dict) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    resources = containers[0].get("resources") or {}
    return (resources.get("limits") or {}).get("memory") or \
        (resources.get("requests") or {}).get("memory")


def _pod_state(pod: dict) -> tuple[str, bool, int]:
    statuses = _status(pod).get("containerStatuses") or []
    ready = bool(statuses) and all(c.get("ready") for c in statuses)
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    return _status(pod).get("phase", "Pending"), ready, restarts


def _replica(pod: dict | None, key: str | None, versions: list[dict], active: str | None
             ) -> dict:
    serves, loading = _serving(key, versions, active) if key else (None, [])
    out = {"name": pod["metadata"]["name"] if pod else key, "address": key,
           "serves": serves, "loading": loading}
    if pod:
        phase, ready, restarts = _pod_state(pod)
        out.update(phase=phase, ready=ready, restarts=restarts,
                   node=(pod.get("spec") or {}).get("nodeName"), memory=_memory(pod))
    return out


def model_tree(model: dict, versions: list[dict], pods: list[dict]) -> dict:
    """RecModel -> versions -> shards -> replicas, each replica with the version it serves
    (as the ModelVersions' status.shards record it), its memory limit and pod state.

    Replicas are the model's pods (Managed) and, for External servers, the addresses the
    versions' status names with no pod behind them."""
    name, status = model["metadata"]["name"], _status(model)
    spec = model["spec"]
    mine = [v for v in versions if v["spec"].get("model") == name]
    active = status.get("activeVersion")
    ordered = versions_of(model, versions)
    admin_port = (spec.get("embeddingServer") or {}).get("adminPort", 8501)
    shards: dict[int, list[dict]] = {i: [] for i in range(spec["sharding"]["shards"])}
    seen: set[str] = set()
    own = [p for p in pods if (p["metadata"].get("labels") or {}).get(L.MODEL) == name]
    for pod in sorted(own, key=lambda p: p["metadata"]["name"]):
        pod_labels = pod["metadata"].get("labels") or {}
        if pod_labels.get(L.COMPONENT) != L.EMBEDDING:
            continue
        ip = _status(pod).get("podIP")
        key = f"{ip}:{admin_port}" if ip else None
        seen.add(key)
        shards.setdefault(int(pod_labels.get(L.SHARD, 0)), []).append(
            _replica(pod, key, mine, active))
    for v in mine:
        for entry in _status(v).get("shards") or []:
            key = entry.get("replica")
            if key and key not in seen:
                seen.add(key)
                shards.setdefault(entry.get("shard", 0), []).append(
                    _replica(None, key, mine, active))
    triton = [_replica(p, None, [], None) for p in sorted(own, key=lambda p: p["metadata"]["name"])
              if (p["metadata"].get("labels") or {}).get(L.COMPONENT) == L.TRITON]
    active_entry = next((v for v in ordered if v["name"] == active), None)
    freshness = next((v["freshnessP99Seconds"] for v in ordered
                      if v["kind"] == "realtime" and v["phase"] == "Active"
                      and v["freshnessP99Seconds"] is not None), None)
    return {
        "name": name, "namespace": model["metadata"].get("namespace"),
        "phase": status.get("phase", "Pending"),
        "activeVersion": active, "lastCleanVersion": status.get("lastCleanVersion"),
        "readyShards": status.get("readyShards"), "shards": spec["sharding"]["shards"],
        "activeNumber": active_entry["number"] if active_entry else None,
        "freshnessP99Seconds": freshness,
        "freshnessObjectiveSeconds": (status.get("freshness") or {}).get(
            "objectiveP99Seconds"),
        "versions": ordered,
        "shardReplicas": [{"shard": i, "replicas": shards[i]} for i in sorted(shards)],
        "triton": triton,
    }


def paint(text: str, state: str | None, colour: bool) -> str:
    if not colour or state is None:
        return text
    kind = ("good" if state in GOOD else "bad" if state in BAD
            else "busy" if state in QUEUED or state in ("Progressing", "Loading") else None)
    return f"{_COLOURS[kind]}{text}{_RESET}" if kind else text


def _replica_line(r: dict, colour: bool) -> str:
    parts = [r["name"]]
    if "phase" in r:
        state = "ready" if r["ready"] else "not ready"
        parts.append(paint(f"{r['phase']} {state}", state, colour))
        if r.get("restarts"):
            parts.append(paint(f"{r['restarts']} restarts", "Degraded", colour))
        if r.get("node"):
            parts.append(f"node {r['node']}")
        if r.get("memory"):
            parts.append(f"memory {r['memory']}")
    if r["address"]:
        if r["address"] != r["name"]:
            parts.append(f"admin {r['address']}")
        parts.append(f"serves {r['serves']}" if r["serves"] else
                     paint("serves nothing", "Degraded", colour))
    for item in r["loading"]:
        parts.append(paint(f"{item['version']} {item['state']} {item['fraction']:.0%}",
                           item["state"] if item["state"] != "Loaded" else "Loading", colour))
    return "  ".join(p for p in parts if p)


def _branches(items: list[str], prefix: str) -> list[str]:
    out = []
    for i, item in enumerate(items):
        last = i == len(items) - 1
        head, *rest = item.split("\n")
        out.append(f"{prefix}{'└─ ' if last else '├─ '}{head}")
        out.extend(f"{prefix}{'   ' if last else '│  '}{line}" for line in rest)
    return out


def render_tree(tree: dict, colour: bool) -> str:
    """The tree as text: box-drawing branches, coloured by state when `colour`."""
    head = (f"recmodel/{tree['name']}  {paint(tree['phase'], tree['phase'], colour)}  "
            f"{tree['readyShards'] if tree['readyShards'] is not None else '-'}/"
            f"{tree['shards']} shards ready  active {tree['activeVersion'] or '-'}  "
            f"last clean {tree['lastCleanVersion'] or '-'}")
    if tree["freshnessP99Seconds"] is not None:
        head += f"  freshness p99 {tree['freshnessP99Seconds']:.3g}s"
        if tree["freshnessObjectiveSeconds"] is not None:
            head += f" (objective {tree['freshnessObjectiveSeconds']:.3g}s)"
    versions = []
    for v in tree["versions"]:
        line = (f"{v['name']}  {v['kind']}  {paint(v['phase'], v['phase'], colour)}"
                + (f"  #{v['number']}" if v["number"] else "")
                + (f"  ({', '.join(v['roles'])})" if v["roles"] else ""))
        if v["phase"] in ("Failed", "RolledBack") and (v["reason"] or v["message"]):
            line += f"  {v['reason'] or ''}: {v['message'] or ''}"
        if v["freshnessP99Seconds"] is not None:
            line += f"  freshness p99 {v['freshnessP99Seconds']:.3g}s"
        versions.append(line)
    sections = ["versions\n" + "\n".join(_branches(versions or ["none"], ""))]
    for shard in tree["shardReplicas"]:
        replicas = [_replica_line(r, colour) for r in shard["replicas"]] or \
            [paint("no replica", "Failed", colour)]
        sections.append(f"shard {shard['shard']}\n" + "\n".join(_branches(replicas, "")))
    if tree["triton"]:
        sections.append("triton\n" + "\n".join(_branches(
            [_replica_line(r, colour) for r in tree["triton"]], "")))
    return "\n".join([head, *_branches(sections, "")])


def namespace_status(models: list[dict], versions: list[dict], tests: list[dict]) -> dict:
    rows = []
    for model in sorted(models, key=lambda m: m["metadata"]["name"]):
        mine = versions_of(model, versions)
        status = _status(model)
        rows.append({
            "name": model["metadata"]["name"], "phase": status.get("phase", "Pending"),
            "readyShards": status.get("readyShards"), "shards": model["spec"]["sharding"]["shards"],
            "activeVersion": status.get("activeVersion"),
            "queued": [v["name"] for v in mine if "queued" in v["roles"]],
            "rolledBack": [v["name"] for v in mine if "rolled back" in v["roles"]],
        })
    abtests = []
    for test in sorted(tests, key=lambda t: t["metadata"]["name"]):
        status = _status(test)
        verdict = status.get("verdict") or {}
        abtests.append({
            "name": test["metadata"]["name"], "phase": status.get("phase", "Pending"),
            "weights": status.get("appliedWeights") or {},
            "stopped": status.get("stoppedArms") or [],
            "verdict": verdict.get("action"), "winner": verdict.get("winner"),
        })
    return {"recmodels": rows, "abtests": abtests}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def render_status(status: dict) -> str:
    """Plain columns (no colour: escape codes would break the alignment)."""
    models = [[m["name"], m["phase"],
               f"{m['readyShards'] if m['readyShards'] is not None else '-'}/{m['shards']}",
               m["activeVersion"] or "-", ",".join(m["queued"]) or "-",
               ",".join(m["rolledBack"]) or "-"] for m in status["recmodels"]]
    lines = _table(["RECMODEL", "PHASE", "SHARDS", "ACTIVE", "QUEUED", "ROLLED-BACK"], models) \
        if models else ["no RecModels"]
    tests = [[t["name"], t["phase"],
              " ".join(f"{arm}={w}" for arm, w in t["weights"].items()) or "-",
              ",".join(t["stopped"]) or "-",
              f"{t['verdict']} {t['winner'] or ''}".strip() if t["verdict"] else "-"]
             for t in status["abtests"]]
    if tests:
        lines += ["", *_table(["ABTEST", "PHASE", "WEIGHTS", "STOPPED", "VERDICT"], tests)]
    return "\n".join(lines)


def rollback_target(model: dict, versions: list[dict], to: str | None) -> str:
    """The version a rollback points spec.activeVersion at, or ValueError saying why none."""
    name, status = model["metadata"]["name"], _status(model)
    active = status.get("activeVersion")
    mine = {v["metadata"]["name"]: v for v in versions if v["spec"].get("model") == name}
    if to is None:
        clean = status.get("lastCleanVersion")
        previous = _status(mine.get(active, {})).get("previousVersion")
        to = clean if clean and clean != active else previous
        if not to:
            raise ValueError(f"recmodel/{name} has no earlier clean version to roll back to; "
                             "name one with --to")
    if to not in mine:
        raise ValueError(f"modelversion/{to} does not exist or belongs to another model "
                         f"(versions of {name}: {', '.join(sorted(mine)) or 'none'})")
    if to == active:
        raise ValueError(f"{to} already serves recmodel/{name}")
    if _status(mine[to]).get("phase") == "Failed":
        raise ValueError(f"modelversion/{to} failed ({_status(mine[to]).get('reason')}); "
                         "it cannot serve")
    return to


def weights_for(test: dict, arm: str | None) -> dict:
    """The spec patch that sends all traffic to `arm` (None: to the baseline, an abort)."""
    spec = test["spec"]
    names = [spec["baseline"]["name"], *(v["name"] for v in spec["variants"])]
    winner = arm or spec["baseline"]["name"]
    if winner not in names:
        raise ValueError(f"abtest/{test['metadata']['name']} has no arm {winner!r} "
                         f"(arms: {', '.join(names)})")
    return {
        "metadata": {"resourceVersion": test["metadata"]["resourceVersion"]},
        "spec": {
            "baseline": {"weight": 100 if winner == names[0] else 0},
            "variants": [{**v, "weight": 100 if v["name"] == winner else 0}
                         for v in spec["variants"]],
        },
    }
