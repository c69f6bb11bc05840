"""The ICMP error budget (nat.ratelimit): a burst, then a rate, with a hand-advanced clock."""

from nat.ratelimit import ErrorBudget


def test_a_burst_then_the_rate():
    budget = ErrorBudget(rate=10.0, burst=3)
    assert [budget.take(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.take(0.05) is False  # half a token
    assert budget.take(0.1) is True
    assert [budget.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst
