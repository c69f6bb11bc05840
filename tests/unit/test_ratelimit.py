"""The ICMP error budget (nat.ratelimit): a burst, then a rate, with a hand-advanced clock."""

from nat.ratelimit import ErrorBudget


def test_a_burst_then_the_rate():
    budget = ErrorBudget(rate=10.0, burst=3)
    assert [budget.take(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.take(0.05) is False  # half a token
    assert budget.take(0.1) is True
    assert [budget.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_keyed_buckets_spend_each_key_apart():
    from nat.ratelimit import KeyedBuckets

    buckets: KeyedBuckets[bytes] = KeyedBuckets(rate=2.0, burst=2, max_keys=8)
    assert [buckets.take(b"a", 0.0) for _ in range(3)] == [True, True, False]
    assert buckets.take(b"b", 0.0) is True  # a's budget is a's alone
    assert buckets.take(b"a", 0.25) is False  # half a token
    assert buckets.take(b"a", 0.5) is True


def test_keyed_buckets_are_bounded_least_recently_used_first():
    from nat.ratelimit import KeyedBuckets

    buckets: KeyedBuckets[int] = KeyedBuckets(rate=1.0, burst=1, max_keys=3)
    for key in (1, 2, 3):
        assert buckets.take(key, 0.0)
    assert buckets.take(1, 0.0) is False  # 1 is now the most recently used
    assert buckets.take(4, 0.0) is True  # 2 goes, the least recently used
    assert len(buckets) == 3
    assert buckets.take(1, 0.0) is False  # 1 was kept, still empty
    assert buckets.take(2, 0.0) is True  # 2 was forgotten: a full bucket again
