"""The metrics of one server, in Prometheus' text format (``GET /tools/metrics-prometheus``).

Each server has its own ``CollectorRegistry`` (never prometheus-client's global default one), so that
several servers in one process (the tests) do not collide. Two kinds of metric:

- instruments updated as things happen (``Metrics``): Lua calls, their latency, their failures, the
  filter failure policy applied, replayed writes, reloads, resets, event deliveries, dropped script log lines;
- values read at scrape time (``StateCollector``): sandbox restarts, failures, states and quarantine,
  the loaded version, the event queue, and Orthanc's basic counts (``orthanc_count_instances`` ...).

docs/operations.md lists every metric.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from broker.core.store import Store
from broker.services import Services
from sandbox import State

#: Orthanc answers ``text/plain; version=0.0.4``: the classic text exposition format.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MEGA_BYTES = 1024 * 1024

#: Latency buckets (seconds) of a Lua call: a filter is a millisecond, a hung call ends at the hard deadline.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: How a call ended (``outcome`` passed to ``Metrics.observe_call``).
OUTCOMES = ("ok", "lua_error", "timeout", "crashed", "unavailable", "error")


class Metrics:
    """The instruments of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.monotonic()
        labels = ["callback", "role"]
        r = self.registry
        self.calls = Counter("luabroker_lua_calls", "Calls of a Lua callback (any outcome)", labels, registry=r)
        self.call_seconds = Histogram("luabroker_lua_call_duration_seconds",
                                      "Wall-clock time of Lua calls that reached a process", labels,
                                      buckets=CALL_BUCKETS, registry=r)
        self.lua_errors = Counter("luabroker_lua_errors", "Calls that raised a Lua error (soft limits included)",
                                  labels, registry=r)
        self.timeouts = Counter("luabroker_lua_timeouts", "Calls that hit the hard deadline (process killed)",
                                labels, registry=r)
        self.crashes = Counter("luabroker_lua_crashes", "Calls whose process died under them", labels, registry=r)
        self.unavailable = Counter("luabroker_lua_unavailable",
                                   "Calls refused because the process was restarting or quarantined", labels,
                                   registry=r)
        self.filter_fallbacks = Counter("luabroker_lua_filter_fallbacks",
                                        "Filters that could not run and were answered by the failure policy",
                                        ["callback", "policy"], registry=r)
        self.replayed_writes = Counter("luabroker_lua_replayed_writes",
                                       "Writes of a retried callback answered from the journal, not applied again",
                                       ["callback"], registry=r)
        self.reloads = Counter("luabroker_lua_reloads", "Script reloads, by result", ["result"], registry=r)
        self.resets = Counter("luabroker_lua_resets", "Sandboxes brought back by POST /lua/reset", ["role"],
                              registry=r)
        self.event_deliveries = Counter("luabroker_events_deliveries",
                                        "Event deliveries by outcome (done, skipped, lua_error, cut, parked)",
                                        ["outcome"], registry=r)
        self.lua_log_dropped = Counter("luabroker_lua_log_lines_dropped",
                                       "Script log lines dropped by LuaSandbox.LogRateLimit", ["tenant"], registry=r)

    def observe_call(self, callback: str, role: str, seconds: float | None, outcome: str) -> None:
        self.calls.labels(callback, role).inc()
        if seconds is not None:
            self.call_seconds.labels(callback, role).observe(seconds)
        counter = {"lua_error": self.lua_errors, "timeout": self.timeouts, "crashed": self.crashes,
                   "unavailable": self.unavailable}.get(outcome)
        if counter is not None:
            counter.labels(callback, role).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StateCollector:
    """Values read from the server at each scrape (no bookkeeping of our own to drift)."""

    def __init__(self, services: Services, started: float, with_index: Callable[[], bool] = lambda: True) -> None:
        self.services = services
        self.started = started
        #: Whether this process reports the figures of the whole index (the counts, the event queue):
        #: with several workers, only the coordinator does, so that they appear once.
        self.with_index = with_index

    def describe(self) -> Iterable[Metric]:
        return []  # collected lazily: the registry must not call collect() at registration

    def collect(self) -> Iterable[Metric]:
        services = self.services
        if services.scripts is not None:
            yield from _sandbox_metrics(services.scripts)
        if not self.with_index():
            return
        yield from _store_metrics(services.store, self.started)
        counts = services.store.outbox.counts()
        pending = GaugeMetricFamily("luabroker_events_pending", "Events waiting for delivery (queue depth)")
        pending.add_metric([], counts.get("pending", 0))
        parked = GaugeMetricFamily("luabroker_events_parked", "Events parked after repeated cut deliveries")
        parked.add_metric([], counts.get("parked", 0))
        yield pending
        yield parked


def merged(expositions: Iterable[tuple[int, str]]) -> bytes:
    """The metrics of several worker processes, given as ``(pid, text)``, in one exposition: each
    sample gets a ``worker`` label (its process), except those of the whole index, which only the
    coordinator reports (``StateCollector.with_index``) and which keep their labels."""
    families: dict[str, Metric] = {}
    for pid, text in expositions:
        for family in text_string_to_metric_families(text):
            into = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                           family.unit))
            for sample in family.samples:
                labels = sample.labels if family.name in INDEX_WIDE else {**sample.labels, "worker": str(pid)}
                into.add_sample(sample.name, labels, sample.value, sample.timestamp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed:
    """A collector of families already built (``merged``)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


#: The families of the whole index (``_store_metrics`` and the event queue).
INDEX_WIDE = frozenset({"orthanc_count_patients", "orthanc_count_studies", "orthanc_count_series",
                        "orthanc_count_instances", "orthanc_disk_size_mb", "orthanc_uncompressed_size_mb",
                        "orthanc_up_time_s", "luabroker_events_pending", "luabroker_events_parked"})


def _store_metrics(store: Store, started: float) -> Iterable[Metric]:
    stats = store.statistics()
    for name, value, text in (
            ("orthanc_count_patients", stats.count_patients, "Patients in the index"),
            ("orthanc_count_studies", stats.count_studies, "Studies in the index"),
            ("orthanc_count_series", stats.count_series, "Series in the index"),
            ("orthanc_count_instances", stats.count_instances, "Instances in the index"),
            ("orthanc_disk_size_mb", stats.disk_size / MEGA_BYTES, "Size of the stored files (MiB)"),
            ("orthanc_uncompressed_size_mb", stats.uncompressed_size / MEGA_BYTES,
             "Size of the stored files before compression (MiB; no compression: equal to the disk size)"),
            ("orthanc_up_time_s", time.monotonic() - started, "Seconds since the server started")):
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], value)
        yield gauge


def _sandbox_metrics(scripts: Any) -> Iterable[Metric]:

    totals = scripts.process_totals()  # role -> {"restarts": n, "failures": n}, across versions
    restarts = CounterMetricFamily("luabroker_lua_sandbox_restarts", "Restarts of a sandbox process after a failure",
                                   labels=["role"])
    failures = CounterMetricFamily("luabroker_lua_sandbox_failures",
                                   "Lost sandbox processes (crash, kill, hard timeout, protocol error)",
                                   labels=["role"])
    for role, numbers in sorted(totals.items()):
        restarts.add_metric([role], numbers["restarts"])
        failures.add_metric([role], numbers["failures"])
    yield restarts
    yield failures
    state = GaugeMetricFamily("luabroker_lua_sandbox_state", "1 for the state each current sandbox process is in",
                              labels=["role", "state"])
    quarantined = GaugeMetricFamily("luabroker_lua_quarantined", "1 while the role's process is quarantined",
                                    labels=["role"])
    # Sandbox.status(): "memory" of the serving process and of the warm spare (docs/operations.md).
    memory = GaugeMetricFamily("luabroker_lua_sandbox_memory_bytes", "Memory of each current sandbox process and "
                               "its bubblewrap processes: rss (VmRSS, shared pages included), anon (RssAnon, "
                               "its own) or pss (shared pages divided among their users)",
                               labels=["role", "process", "kind"])
    spare = GaugeMetricFamily("luabroker_lua_spare_warm", "1 while the role's warm spare process is ready",
                              labels=["role"])
    for entry in scripts.status():
        for candidate in State:
            state.add_metric([entry["role"], candidate.value], 1 if entry["state"] == candidate.value else 0)
        quarantined.add_metric([entry["role"]], 1 if entry["state"] == State.QUARANTINED.value else 0)
        for process, figures in (("serving", entry["memory"]), ("spare", (entry["spare"] or {}).get("memory"))):
            for kind in ("rss", "anon", "pss"):
                if figures is not None and f"{kind}_kib" in figures:
                    memory.add_metric([entry["role"], process, kind], figures[f"{kind}_kib"] * 1024)
        spare.add_metric([entry["role"]], 1 if (entry["spare"] or {}).get("warm") else 0)
    yield state
    yield quarantined
    yield memory
    yield spare
    info = GaugeMetricFamily("luabroker_lua_scripts_info", "The loaded version of the scripts (SHA-256)",
                             labels=["version"])
    info.add_metric([scripts.version], 1)
    yield info
    retiring = GaugeMetricFamily("luabroker_lua_retiring_versions",
                                 "Replaced versions still finishing their calls")
    retiring.add_metric([], scripts.retiring_count())
    yield retiring
