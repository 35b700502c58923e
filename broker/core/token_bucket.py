"""A token bucket: the bound of a rate (the scripts' log lines, a tenant's ingest)."""
from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; one token per line, instance, ... Not
    thread-safe: its user holds a lock around ``take``."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
