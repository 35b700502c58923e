"""The warm spare: one process per sandbox, started before it is needed, so a restart costs no spawn.

A cold restart spends nearly all its time before the first script byte is sent: bubblewrap builds its
namespaces, the interpreter starts, the shim reads its modules and builds the environment, and says
``ready`` (docs/benchmarks.md, "bench/sandbox_recovery.py"). None of that depends on the scripts, so it
is done ahead: the spare is spawned with the same layers and limits as the serving process, waits
past its ``ready`` frame, and then receives nothing. When the serving process is lost, the restart
takes the spare and only loads the scripts and runs ``Initialize`` in it: a fresh Lua state, as a cold
restart gives, with no user code run in it before that moment. The supervisor then prepares the next
spare in the background.

A spare that dies while it waits (killed from outside, the OOM killer) is dropped and replaced; it
never counts as a failure of the sandbox, because it served nothing. One that cannot be prepared is
retried after ``RETRY_S``, and the restart meanwhile spawns cold, as it did without a spare.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox import memory
from sandbox.channel import SandboxChannel
from sandbox.process import ChildProcess

log = logging.getLogger("sandbox.supervisor")

#: Seconds before another attempt once a spare could not be prepared (or died while waiting).
RETRY_S = 5.0
#: Seconds between a (re)start and the preparation of the next spare.
REFILL_DELAY_S = 0.05


@dataclass(frozen=True)
class Prepared:
    """A process past its ``ready`` frame that has received nothing yet.

    ``ready_s`` is the time from the start of its spawn to its ``ready`` frame.
    """

    channel: SandboxChannel
    info: dict[str, Any]
    ready_s: float

    @property
    def process(self) -> ChildProcess:
        return self.channel.process


def prepare(spawn: Callable[[], SandboxChannel], timeout_s: float,
            on_spawned: Callable[[SandboxChannel], None] = lambda channel: None) -> Prepared:
    """Spawn a process and wait for its ``ready``; ``on_spawned`` learns of the channel before the
    wait (so a stop can kill it). The process is killed if it does not get there."""
    began = time.monotonic()
    channel = spawn()
    on_spawned(channel)
    try:
        info = channel.wait_ready(timeout_s)
    except BaseException:
        channel.kill("start failed")
        raise
    return Prepared(channel, info, time.monotonic() - began)


class Spare:
    """The spare slot of one sandbox. Thread-safe: the supervisor fills it, any restart takes it.

    ``close()`` (the sandbox stops) kills the spare and one being prepared; ``open()`` allows spares
    again. A preparation that was under way across a close is discarded, never installed.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._ready: Prepared | None = None
        self._preparing: SandboxChannel | None = None
        self._epoch = 0
        self._open = False
        self._retry_at = 0.0
        self.made = 0
        self.failures = 0

    def open(self) -> None:
        """Allow spares again, the first one ``REFILL_DELAY_S`` from now: the calls that waited for a
        restart run first, without a spawn (a fork of the broker) beside them."""
        with self._lock:
            self._open = True
            self._retry_at = time.monotonic() + REFILL_DELAY_S

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._epoch += 1
            ready, self._ready = self._ready, None
            preparing, self._preparing = self._preparing, None
        if ready is not None:
            ready.channel.kill("the sandbox stopped")
        if preparing is not None:
            preparing.process.kill()  # not the channel: its lock is held while it waits for ``ready``

    def wanted_in(self, now: float) -> float | None:
        """Seconds until a spare should be prepared (0: now), or None when none is wanted."""
        with self._lock:
            if not self._open or self._ready is not None or self._preparing is not None:
                return None
            return max(0.0, self._retry_at - now)

    def fill(self, spawn: Callable[[], SandboxChannel], timeout_s: float) -> None:
        """Prepare a spare on the calling thread (the supervisor's) and install it. A failure is
        logged and retried later; it is not the sandbox's failure."""
        with self._lock:
            if not self._open or self._ready is not None or self._preparing is not None:
                return
            epoch = self._epoch

        def preparing(channel: SandboxChannel) -> None:
            with self._lock:
                if epoch == self._epoch:
                    self._preparing = channel
                    return
            channel.kill("the sandbox stopped")

        try:
            spare = prepare(spawn, timeout_s, preparing)
        except Exception as exc:
            with self._lock:
                current = epoch == self._epoch
                if current:
                    self._preparing = None
                    self.failures += 1
                    self._retry_at = time.monotonic() + RETRY_S
            if current:
                log.warning("sandbox %s: no warm spare process (%s); trying again in %g s", self.name, exc,
                            RETRY_S, extra={"sandbox": self.name})
            return
        with self._lock:
            if epoch == self._epoch:
                self._preparing = None
                self._ready = spare
                self.made += 1
                return
        spare.channel.kill("the sandbox stopped")

    def take(self) -> Prepared | None:
        """The spare, removed from the slot, if it is alive; None otherwise (a dead one is dropped)."""
        with self._lock:
            spare, self._ready = self._ready, None
        if spare is None:
            return None
        if spare.channel.alive and not spare.process.doomed():
            return spare
        self._dropped(spare)
        return None

    def watched(self) -> list[ChildProcess]:
        """The spare's process, for the supervisor to watch along with the serving one."""
        with self._lock:
            return [self._ready.process] if self._ready is not None else []

    def drop_if_dead(self) -> None:
        """Drop a spare that died while it waited; the next one is prepared after ``RETRY_S``."""
        with self._lock:
            spare = self._ready
            if spare is None or not spare.process.exited():
                return
            self._ready = None
        self._dropped(spare)

    def _dropped(self, spare: Prepared) -> None:
        process = spare.process
        spare.channel.kill("the spare died while it waited")
        with self._lock:
            self.failures += 1
            self._retry_at = time.monotonic() + RETRY_S
        log.warning("sandbox %s: the warm spare process %d %s while it waited; replaced in %g s", self.name,
                    process.interpreter_pid, process.describe_exit(), RETRY_S, extra={"sandbox": self.name})

    def status(self) -> dict[str, Any]:
        """``warm``, the spare's pids, memory and spawn-to-ready time, how many were made and lost."""
        with self._lock:
            spare, made, failures = self._ready, self.made, self.failures
        process = spare.process if spare is not None else None
        return {
            "warm": spare is not None,
            "pid": process.interpreter_pid if process is not None else None,
            "wrapper_pid": process.pid if process is not None and process.wrapper else None,
            "ready_s": round(spare.ready_s, 4) if spare is not None else None,
            "memory": memory.of(process),
            "made": made,
            "failures": failures,
        }
