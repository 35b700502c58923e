"""One row of issue 12's table: what was measured on each side, the target, and whether it is met.

Kept apart from the measuring code so that the runner, the printed table and the table written into
``docs/benchmarks.md`` read the same numbers and apply the same rule for "met".
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

#: ``ratio_at_least``: luabroker / Orthanc must be at least ``value`` (throughput rows).
#: ``ratio_at_most``: luabroker / Orthanc at most ``value`` (a time: "at most N times slower").
#: ``luabroker_at_most``: luabroker's own figure at most ``value`` (no Orthanc counterpart).
TargetKind = Literal["ratio_at_least", "ratio_at_most", "luabroker_at_most"]


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    value: float
    text: str  # as the issue writes it: "≥ 1.2×", "≤ 3× slower", "≤ 20 ms"


@dataclass
class Row:
    """Samples (one per round) in the row's ``unit``; ``limit`` holds storescp's, for the ingest rows."""

    key: str
    work: str
    unit: Literal["/s", "µs", "req/s", "ms"]
    target: Target
    luabroker: list[float] = field(default_factory=list)
    orthanc: list[float] = field(default_factory=list)
    limit: list[float] = field(default_factory=list)
    note: str = ""

    @staticmethod
    def _median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def ours(self) -> float | None:
        return self._median(self.luabroker)

    @property
    def theirs(self) -> float | None:
        return self._median(self.orthanc)

    @property
    def reference(self) -> float | None:
        return self._median(self.limit)

    @property
    def ratio(self) -> float | None:
        """luabroker / Orthanc of the medians (for a time, how many times slower luabroker is)."""
        if self.ours is None or self.theirs is None or self.theirs <= 0:
            return None  # a time below the noise of its measurement has no meaningful ratio
        return self.ours / self.theirs

    def share(self, value: float | None) -> float | None:
        """``value`` as a share of the storescp limit (ingest rows only)."""
        if value is None or not self.reference:
            return None
        return value / self.reference

    @property
    def met(self) -> bool | None:
        if self.target.kind == "luabroker_at_most":
            return None if self.ours is None else self.ours <= self.target.value
        if self.ratio is None:
            return None
        if self.target.kind == "ratio_at_least":
            return self.ratio >= self.target.value
        return self.ratio <= self.target.value


def figure(value: float, unit: str, kilo: bool | None = None) -> str:
    """A value the way the issue's table writes it: ``58/s``, ``161 µs``, ``13.3 k req/s``, ``58 ms``
    (``kilo``: thousands of req/s; by default from 10 k on)."""
    if unit == "req/s" and (value >= 10_000 if kilo is None else kilo):
        return f"{value / 1000:.1f} k req/s"
    if unit == "/s":
        return f"{value:.0f}/s"
    if unit == "ms" and value < 10:
        return f"{value:.1f} ms"
    return f"{value:.0f} {unit}"


def cell(values: list[float], unit: str) -> str:
    """The median, and the range over the rounds (same scale) when there were several: ``58/s (55–60)``."""
    if not values:
        return "—"
    median = statistics.median(values)
    kilo = unit == "req/s" and median >= 10_000
    text = figure(median, unit, kilo)
    if len(values) > 1:
        low, high = (figure(v, unit, kilo).replace(" k req/s", "").replace(unit, "").strip()
                     for v in (min(values), max(values)))
        text += f" ({low}–{high})"
    return text


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f} %"


def verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[met]
