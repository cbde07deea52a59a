"""The ABTest ticker's reading of Kopf's peering object: paused exactly when Kopf pauses
the operator's own handlers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controllers.abtest.peering import paused

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 5, lifetime: int = 60) -> dict:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


def test_the_highest_priority_replica_acts_and_the_others_pause():
    status = {"recop-7f9-abcde": peer(4711), "recop-7f9-fghij": peer(310)}
    assert not paused(status, 4711, NOW)
    assert paused(status, 310, NOW)


def test_a_dead_peer_no_longer_pauses_anyone():
    status = {"recop-7f9-abcde": peer(4711, seen_ago=61), "recop-7f9-fghij": peer(310)}
    assert not paused(status, 310, NOW)


def test_two_live_peers_of_one_priority_both_pause_as_kopf_does():
    status = {"a": peer(100), "b": peer(100, seen_ago=0)}
    assert paused(status, 100, NOW)
    assert not paused({"a": peer(100)}, 100, NOW)
    # A keep-alive not written yet counts as just seen.
    assert paused({"a": peer(100), "b": {"priority": 100}}, 100, NOW)


def test_alone_or_without_a_peering_record_it_acts():
    assert not paused({}, 0, NOW)
    assert not paused({"self": peer(7)}, 7, NOW)
