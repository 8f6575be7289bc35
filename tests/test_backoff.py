"""The one backoff function: doubling, cap, jitter bounds, and the ClientService policy."""

from supervisor._backoff import backoff_delay, retry_policy


def test_doubles_from_initial_up_to_the_cap_without_jitter():
    delays = [backoff_delay(n, 0.1, 1.0) for n in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_scales_within_the_ratio_both_ways():
    assert backoff_delay(2, 1.0, 10.0, 0.25, rand=lambda: 0.0) == 3.0
    assert backoff_delay(2, 1.0, 10.0, 0.25, rand=lambda: 0.5) == 4.0
    assert backoff_delay(2, 1.0, 10.0, 0.25, rand=lambda: 0.999999) < 5.0
    assert backoff_delay(2, 1.0, 10.0, 0.25, rand=lambda: 0.999999) > 4.99


def test_huge_attempt_numbers_stay_at_the_cap():
    assert backoff_delay(10_000, 0.5, 7.0) == 7.0


def test_retry_policy_counts_failures_from_one_and_respects_floor_and_cap():
    policy = retry_policy(0.25, 5.0, 0.2, floor=1.0, rand=lambda: 0.999999)
    assert policy(1) == 1.0  # 0.25 · 1.2 is below the floor
    assert policy(3) > 1.0
    assert policy(30) == 5.0  # jitter never takes it above the cap
    plain = retry_policy(0.25, 5.0)
    assert [plain(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
