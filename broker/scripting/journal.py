"""The write journal: what a callback that was cut (killed, timed out) had already changed, so that its
retry does not change it a second time.

There is no transaction around a whole callback: each built-in runs in the broker, to completion, in
the store's own transaction, and the script sees its own writes at once (Orthanc's semantics; a
callback that writes then reads must see the write). What a kill can leave behind is therefore a
*prefix* of the callback's writes, each one whole. The journal makes the retry finish that prefix
instead of repeating it:

- every write built-in (``builtins.WRITING_BUILTINS``) made during one delivery is recorded in order, with a
  digest of its arguments and the answer it gave;
- when the same delivery is retried (same outbox event, or the retry of a filter whose process died),
  the i-th write of the retry is compared with the i-th recorded one: if they are the same call, it is
  not run again and the recorded answer is returned (it is *replayed*);
- from the first difference on, every write runs normally, and the record follows the new attempt.

So a callback that makes the same calls in the same order on every run (one whose writes depend on its
arguments, not on what it already wrote) has each of its writes applied exactly once, however often it
is cut. docs/operations.md ("Side effects of a killed call") states what is and is not guaranteed.

A write made while another journaled write is running (a filter triggered by ``RestApiPost('/instances')``
from a callback) belongs to that outer write: it is not recorded on its own, and it is skipped with it.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack


@dataclass(frozen=True)
class Write:
    builtin: str
    digest: bytes
    label: str
    answer: Any


def _digest(builtin: str, args: list[Any]) -> bytes:
    packed = msgpack.packb([builtin, args], use_bin_type=True, default=repr)
    return hashlib.sha256(packed).digest()


def _label(builtin: str, args: list[Any]) -> str:
    uri = args[0] if args else ""
    if isinstance(uri, bytes):
        uri = uri.decode("utf-8", "replace")
    return f"{builtin} {uri}"[:200]


class Journal:
    """The writes of one delivery of ``callback``, across its attempts. One thread uses it at a time."""

    def __init__(self, callback: str = "", delivery: Hashable | None = None) -> None:
        self.callback = callback
        #: The outbox event being delivered (its seq), and the attempt running now (1 = the first);
        #: what ``GetCurrentEvent()`` tells the script.
        self.delivery = delivery
        self.attempt = 0
        self.writes: list[Write] = []
        self.replayed = 0
        self._cursor = 0
        self._diverged = False
        self._busy = False

    def begin_attempt(self, attempt: int | None = None) -> None:
        self.attempt = self.attempt + 1 if attempt is None else attempt
        self._cursor = 0
        self._diverged = False

    @property
    def labels(self) -> list[str]:
        return [write.label for write in self.writes]

    def run(self, builtin: str, args: list[Any], run: Callable[[], Any],
            on_replay: Callable[[Write], None] | None = None) -> Any:
        """Run the write ``run()``, or answer it from the record if a cut attempt already applied it."""
        if self._busy:  # a write inside a write: part of the outer one
            return run()
        digest = _digest(builtin, args)
        if not self._diverged and self._cursor < len(self.writes):
            recorded = self.writes[self._cursor]
            if recorded.digest == digest:
                self._cursor += 1
                self.replayed += 1
                if on_replay is not None:
                    on_replay(recorded)
                return recorded.answer
            # The script asks for something else than last time: the rest of the old record was
            # applied and stays applied; from here on the record follows this attempt.
            self._diverged = True
            del self.writes[self._cursor:]
        self._busy = True
        try:
            answer = run()
        finally:
            self._busy = False
        self.writes.append(Write(builtin, digest, _label(builtin, args), answer))
        self._cursor = len(self.writes)
        return answer


_local = threading.local()


def active() -> Journal | None:
    """The journal of the delivery running on this thread, if any."""
    return getattr(_local, "journal", None)


@contextmanager
def recording(journal: Journal | None, attempt: int | None = None) -> Iterator[Journal | None]:
    """Make ``journal`` the one that records the writes of the calls made on this thread inside the
    ``with`` (the rpc handler runs on the calling thread); the previous one comes back after it.
    ``attempt``: the number of this attempt, when the caller counts them (an outbox event does)."""
    previous = active()
    _local.journal = journal
    if journal is not None:
        journal.begin_attempt(attempt)
    try:
        yield journal
    finally:
        _local.journal = previous
