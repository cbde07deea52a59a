"""Whether Kopf has paused this operator in favour of a peer, read from the peering
object, for the ABTest ticker: Kopf stops calling a paused replica's handlers and stops
its timers and daemons, but knows nothing of a task of ours, and exposes its pause
state to no handler. Pure.

The rule is Kopf's own (kopf/_core/engines/peering.py, process_peering_event): paused
while another live peer has a higher priority, or the same one (Kopf then pauses every
such peer). The peering object's status maps each peer's identity to its priority,
lifetime (seconds) and lastseen (ISO 8601); a peer is live until lastseen + lifetime.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta


def _live(peer: Mapping, now: datetime) -> bool:
    seen = peer.get("lastseen")
    if seen is None:
        return True  # as Kopf: a peer without a keep-alive yet counts as just seen
    return datetime.fromisoformat(seen) + timedelta(seconds=int(peer.get("lifetime", 60))) \
        > now


def paused(peers: Mapping[str, Mapping], priority: int, now: datetime) -> bool:
    """`peers`: the peering object's status; `priority`: this operator's. Its own entry
    is one of those with its priority, so a second one is a peer of the same rank."""
    ranks = [int(p.get("priority", 0)) for p in peers.values()
             if isinstance(p, Mapping) and _live(p, now)]
    return any(r > priority for r in ranks) or ranks.count(priority) > 1
