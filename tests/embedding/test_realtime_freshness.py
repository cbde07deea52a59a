"""The freshness a replica reports covers only its recent deltas."""

from embedding.realtime import RecentFreshness


def test_late_deltas_age_out_of_the_reported_freshness():
    recent = RecentFreshness(span=30)
    assert recent.quantiles(now=0) == (0.0, 0.0)
    for i in range(100):
        recent.add(10.0, now=i * 0.1)  # a burst published 10 s before it applied
    assert recent.quantiles(now=10) == (10.0, 10.0)
    for i in range(100):
        recent.add(0.01, now=20 + i * 0.1)
    p50, p99 = recent.quantiles(now=45)  # the first burst is older than the span
    assert (p50, p99) == (0.01, 0.01)
    assert recent.quantiles(now=100) == (0.0, 0.0)


def test_the_p99_is_over_the_recent_samples_not_their_mean():
    recent = RecentFreshness(span=30)
    for i in range(1000):
        recent.add(5.0 if i % 50 == 0 else 0.02, now=i * 0.01)
    p50, p99 = recent.quantiles(now=10)
    assert p50 == 0.02 and p99 > 1
