"""Backoff math and limit arithmetic: pure functions, no processes, no sleeping."""
from __future__ import annotations

import pytest

from sandbox import BackoffPolicy, Limits, next_delay

NO_JITTER = BackoffPolicy(jitter=0.0)


def test_first_restart_is_immediate():
    assert next_delay(0, BackoffPolicy(), rand=0.0) == 0.0
    assert next_delay(0, BackoffPolicy(), rand=0.99) == 0.0


def test_delays_grow_exponentially_from_base_then_cap():
    delays = [next_delay(attempt, NO_JITTER, rand=0.5) for attempt in range(1, 10)]
    assert delays[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert delays[6:] == [5.0, 5.0, 5.0]


def test_jitter_only_shortens_and_stays_within_its_fraction():
    policy = BackoffPolicy(jitter=0.2)
    assert next_delay(3, policy, rand=0.0) == pytest.approx(0.4)
    assert next_delay(3, policy, rand=0.999999) == pytest.approx(0.4 * 0.8, rel=1e-5)
    assert next_delay(3, policy, rand=0.5) == pytest.approx(0.4 * 0.9)
    assert max(next_delay(50, policy, rand=r / 10) for r in range(10)) <= policy.cap_s


def test_huge_attempt_numbers_do_not_overflow():
    assert next_delay(10_000, NO_JITTER, rand=0.0) == NO_JITTER.cap_s


def test_nonzero_initial_delay_is_used_for_the_first_attempt():
    assert next_delay(0, BackoffPolicy(initial_s=0.5, jitter=0.0), rand=0.3) == 0.5


@pytest.mark.parametrize("kwargs", [{"jitter": 1.5}, {"max_failures": 0}, {"factor": 0.5}, {"cap_s": -1}])
def test_backoff_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_defaults_match_the_documented_limits():
    limits = Limits()
    assert (limits.soft_cpu_s, limits.hard_timeout_s, limits.memory_kb, limits.address_space_mb) == \
        (10.0, 15.0, 262144, 1024)
    assert (limits.cpu_lifetime_s, limits.open_files, limits.max_frame, limits.max_log_lines) == \
        (86400, 32, 64 << 20, 1000)
    policy = BackoffPolicy()
    assert (policy.initial_s, policy.base_s, policy.factor, policy.cap_s) == (0.0, 0.1, 2.0, 5.0)
    assert (policy.max_failures, policy.window_s, policy.cooldown_s) == (5, 60.0, 30.0)


def test_longer_soft_budget_pushes_the_hard_deadline_back():
    limits = Limits(soft_cpu_s=10, hard_timeout_s=15)
    assert limits.hard_timeout_for(None) == 15
    assert limits.hard_timeout_for(2) == 15
    assert limits.hard_timeout_for(30) == 35


@pytest.mark.parametrize("kwargs", [{"hard_timeout_s": 0}, {"address_space_mb": 4}, {"open_files": 2}, {"nice": -1},
                                    {"nice": 20}])
def test_limits_reject_values_the_child_cannot_run_with(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)
