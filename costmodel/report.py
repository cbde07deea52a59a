"""Human-readable summary of a Placement (for logs, events and `kubectl describe`)."""

from __future__ import annotations

from costmodel.model import Placement

_GIB = 1 << 30


def render(placement: Placement) -> str:
    p = placement
    saved = p.naive_cores - p.cores_used
    gap = p.cores_used - p.lower_bound_cores
    lines = [
        f"solver {p.solver} ({'optimal' if p.optimal else 'not proven optimal'}) "
        f"in {p.solve_seconds * 1000:.0f} ms",
        f"cores used {p.cores_used} (lower bound {p.lower_bound_cores}, gap {gap}); "
        f"one pod per model would use {p.naive_cores} (saves {saved}); "
        f"GPUs used {p.gpus_used}; variants moved {p.moves}",
        "",
        "models:",
    ]
    for m in p.models:
        cpu = (
            f"{m.cpu_request_millicores // 1000} dedicated cores"
            if m.dedicated
            else f"{m.cpu_request_millicores}m shared"
        )
        gpu = f", GPU {m.gpu_index} x{m.gpu_share:.2f}" if m.gpu_index is not None else ""
        moved = " (moved)" if m.moved else ""
        lines.append(
            f"  {m.model} [{m.role}] -> {m.node}{moved}: {cpu}, "
            f"{m.memory_request_bytes / _GIB:.1f} GiB{gpu}"
        )
    lines += ["", "nodes:"]
    for n in p.nodes:
        if not n.cores_used:
            continue
        gpus = "".join(
            f", GPU {g.index} {g.share:.2f} {g.memory_bytes / _GIB:.1f} GiB"
            for g in n.gpus
            if g.models
        )
        lines.append(
            f"  {n.node}: {n.dedicated_cores} dedicated + {n.shared_pool_cores} shared cores "
            f"({n.shared_used_millicores}m requested), cpu headroom "
            f"{n.cpu_headroom_millicores}m, memory headroom "
            f"{n.memory_headroom_bytes / _GIB:.1f} GiB{gpus}"
        )
    lines += ["", "SLO risk:"]
    for r in p.risks:
        gpu = f", GPU {r.gpu_utilisation:.0%}" if r.gpu_utilisation is not None else ""
        saturates = "never" if r.saturation_qps is None else f"at {r.saturation_qps:.0f} qps"
        lines.append(
            f"  {r.model}: {r.level} - cpu {r.predicted_utilisation:.0%} of request "
            f"(target {r.target_utilisation:.0%}{gpu}), saturates {saturates}; {r.reason}"
        )
    return "\n".join(lines)
