"""RestartSchedule: when to restart and when to quarantine, driven with injected monotonic time."""
from __future__ import annotations

import pytest

from sandbox import BackoffPolicy
from sandbox.states import State
from sandbox.supervisor import RestartSchedule

POLICY = BackoffPolicy(jitter=0.0, max_failures=5, window_s=60.0, cooldown_s=30.0)


def schedule(policy: BackoffPolicy = POLICY) -> RestartSchedule:
    return RestartSchedule(policy, rand=lambda: 0.0)


def test_transition_backoff_to_starting_immediately_after_first_failure():
    s = schedule()
    assert s.record_failure(100.0) is State.BACKOFF
    assert s.transition(State.BACKOFF, 100.0) is State.STARTING


def test_transition_backoff_waits_for_the_delay():
    s = schedule()
    s.record_failure(100.0)
    s.transition(State.BACKOFF, 100.0)
    assert s.record_failure(100.5) is State.BACKOFF      # second failure: 0.1 s
    assert s.transition(State.BACKOFF, 100.55) is State.BACKOFF
    assert s.seconds_until_retry(100.55) == pytest.approx(0.05)
    assert s.transition(State.BACKOFF, 100.6) is State.STARTING
    assert s.retry_at is None


def test_transition_backoff_to_quarantined_after_five_failures_in_window():
    s = schedule()
    states = [s.record_failure(100.0 + i) for i in range(5)]
    assert states == [State.BACKOFF] * 4 + [State.QUARANTINED]
    assert s.retry_at == pytest.approx(104.0 + 30.0)
    assert s.transition(State.QUARANTINED, 133.9) is State.QUARANTINED
    assert s.transition(State.QUARANTINED, 134.0) is State.STARTING


def test_failures_older_than_the_window_do_not_count():
    s = schedule()
    for t in (0.0, 20.0, 40.0, 59.0):
        assert s.record_failure(t) is State.BACKOFF
    # At t=61 the failure at 0 has left the window: four recent failures, not five.
    assert s.record_failure(61.0) is State.BACKOFF
    assert len(s.failures) == 4
    assert s.record_failure(62.0) is State.QUARANTINED


def test_delay_grows_with_recent_failures():
    s = schedule()
    delays = []
    for i in range(4):
        now = 10.0 * i
        s.record_failure(now)
        delays.append(s.seconds_until_retry(now))
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.4])


def test_failure_right_after_quarantine_quarantines_again():
    s = schedule()
    for i in range(5):
        s.record_failure(float(i))
    assert s.transition(State.QUARANTINED, 40.0) is State.STARTING
    assert s.half_open
    assert s.record_failure(41.0) is State.QUARANTINED


def test_successful_call_after_quarantine_closes_the_circuit():
    s = schedule()
    for i in range(5):
        s.record_failure(float(i))
    s.transition(State.QUARANTINED, 40.0)
    s.record_success()
    assert s.record_failure(41.0) is State.BACKOFF


def test_no_restart_is_due_in_other_states():
    s = schedule()
    s.record_failure(0.0)
    for state in (State.READY, State.STARTING, State.STOPPED, State.FATAL):
        assert s.transition(state, 1000.0) is state


def test_max_failures_of_one_quarantines_on_first_failure():
    s = schedule(BackoffPolicy(max_failures=1))
    assert s.record_failure(0.0) is State.QUARANTINED
