"""Automatic retries of transfers (C-STORE to a modality, HTTP to a peer): exponential backoff.

Orthanc has no automatic retry: a failed transfer fails its job at once (an operator may resubmit it).
luabroker retries asynchronous transfer jobs (see docs/jobs.md). ``next_delay`` is pure, so tests
check the schedule without sleeping.
"""
from __future__ import annotations

import random

from broker.config.jobs import RetryPolicy


def next_delay(failures: int, policy: RetryPolicy, rand: random.Random | None = None) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1, 2, ...): ``initial × multiplier^(n-1)``,
    capped at ``max_delay_s``, with jitter."""
    base = min(policy.initial_delay_s * policy.multiplier ** max(failures - 1, 0), policy.max_delay_s)
    if policy.jitter <= 0:
        return base
    spread = (rand or random).uniform(-policy.jitter, policy.jitter)
    return max(0.0, base * (1.0 + spread))
