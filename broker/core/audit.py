"""The audit log: what was deployed, reloaded and quarantined, and every privileged action a script
performed (docs/audit.md). Append-only and hash-chained, in the index.

Each entry is a JSON object (``Seq``, ``Tenant``, ``At``, ``Action``, ``Actor`` and the action's own
fields), kept as its canonical text (sorted keys, no spaces, UTF-8) with ``Hash``: the SHA-256 of
the previous entry's hash, a newline and this text (the first entry follows ``GENESIS``). Changing,
inserting, removing or reordering an entry breaks the chain from that entry on, and ``verify`` names
the first one that does not hold. Removing the last entries leaves a shorter valid chain: the head
hash that ``verify`` gives is what an operator keeps elsewhere to notice that.

The entries are appended in the index's write transaction (``BEGIN IMMEDIATE``), so the processes of
a server that share the index (worker processes; PostgreSQL nodes later) append to one chain. The
same entries exported as JSON lines (each entry's fields and its ``Hash``) verify the same way:
``python -m broker.core.audit <index.sqlite | export.jsonl>`` (exit status 1 and the first tampered
entry when the chain does not hold).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.core.index import NO_LIMIT, Index

log = logging.getLogger("luabroker.audit")

#: The hash that the first entry follows.
GENESIS = "0" * 64


def canonical(entry: dict[str, Any]) -> str:
    """The text of an entry that its hash covers."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chained(previous: str, text: str) -> str:
    return hashlib.sha256(f"{previous}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found: the number of entries that hold, the hash of the last of them (the head),
    and the first that does not (its ``Seq``, or its line in an export) with why."""

    entries: int
    head: str
    first_tampered: int | None = None
    reason: str = ""

    @property
    def valid(self) -> bool:
        return self.first_tampered is None

    def to_json(self) -> dict[str, Any]:
        return {"Valid": self.valid, "Entries": self.entries, "Head": self.head,
                "FirstTampered": self.first_tampered, "Reason": self.reason or None}


def verify(rows: Iterable[tuple[int, str, str]]) -> Verification:
    """Check the chain of ``rows``: (position, the entry's canonical text, its hash), in order. The
    position names a tampered entry (its ``Seq`` in the index, its line in an export)."""
    previous, count, expected_seq = GENESIS, 0, 1
    for position, text, stored_hash in rows:
        try:
            entry = json.loads(text)
        except ValueError as exc:
            return Verification(count, previous, position, f"not JSON: {exc}")
        if not isinstance(entry, dict) or entry.get("Seq") != expected_seq:
            return Verification(count, previous, position, f"expected the entry Seq {expected_seq}")
        if canonical(entry) != text:
            return Verification(count, previous, position, "the entry is not in its canonical form")
        if chained(previous, text) != stored_hash:
            return Verification(count, previous, position, "the hash does not match the entry and the one before")
        previous, count, expected_seq = stored_hash, count + 1, expected_seq + 1
    return Verification(count, previous)


class AuditLog:
    """The audit entries of the index."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def record(self, tenant: str, action: str, actor: str, **fields: Any) -> int:
        """Append an entry; returns its ``Seq``. ``fields`` are the action's own (JSON values)."""
        with self.index.write() as tx:
            last = tx.connection.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, previous = (last[0] + 1, last[1]) if last else (1, GENESIS)
            at = datetime.now(UTC).isoformat(timespec="milliseconds")
            text = canonical({**fields, "Seq": seq, "Tenant": tenant, "At": at, "Action": action, "Actor": actor})
            tx.connection.execute("INSERT INTO audit (seq, tenant, entry, hash) VALUES (?, ?, ?, ?)",
                                  (seq, tenant, text, chained(previous, text)))
        return seq

    def note(self, tenant: str, action: str, actor: str, **fields: Any) -> None:
        """``record`` for what is audited on its way: a failure to write the entry is logged, never
        raised into the action (a full disk must not stop the ingest)."""
        try:
            self.record(tenant, action, actor, **fields)
        except Exception:
            log.exception("Cannot write the audit entry %s of %s", action, actor)

    def entries(self, tenant: str | None = None, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The entries after ``since`` (a ``Seq``), oldest first, each with its ``Hash``; only
        ``tenant``'s when given."""
        query = "SELECT entry, hash FROM audit WHERE seq > ?" + (" AND tenant = ?" if tenant is not None else "")
        parameters: tuple[Any, ...] = (since, tenant) if tenant is not None else (since,)
        with self.index.read() as tx:
            rows = tx.connection.execute(query + " ORDER BY seq LIMIT ?",
                                         (*parameters, NO_LIMIT if limit is None else limit))
            return [{**json.loads(text), "Hash": digest} for text, digest in rows.fetchall()]

    def verify(self) -> Verification:
        with self.index.read() as tx:
            return verify(tx.connection.execute("SELECT seq, entry, hash FROM audit ORDER BY seq").fetchall())


def export_lines(entries: Iterable[dict[str, Any]]) -> Iterator[str]:
    """JSON lines: each entry with its ``Hash``, in its canonical form."""
    for entry in entries:
        yield canonical(entry) + "\n"


def verify_lines(lines: Iterable[str]) -> Verification:
    """``verify`` over an export: the position of an entry is its line number (from 1)."""
    def rows() -> Iterator[tuple[int, str, str]]:
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                digest = entry.pop("Hash")
            except (ValueError, AttributeError, KeyError, TypeError):
                yield number, line.rstrip("\n"), ""  # fails in verify, which says why
                continue
            yield number, canonical(entry), str(digest)
    return verify(rows())


def main(argv: list[str] | None = None) -> int:
    """Verify an index's audit log, or an export of it; exit status 1 names the first tampered entry."""
    parser = argparse.ArgumentParser(prog="python -m broker.core.audit", description=main.__doc__)
    parser.add_argument("path", type=Path, help="the index (index.sqlite in the storage directory) or a .jsonl export")
    path = parser.parse_args(argv).path
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as lines:
                found, what = verify_lines(lines), "line"
        else:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                found, what = verify(connection.execute("SELECT seq, entry, hash FROM audit ORDER BY seq")), "Seq"
    except (OSError, sqlite3.Error) as exc:
        print(f"cannot read the audit log {path}: {exc}", file=sys.stderr)
        return 2
    if found.valid:
        print(f"audit log valid: {found.entries} entries, head {found.head}")
        return 0
    print(f"audit log tampered: entry at {what} {found.first_tampered} ({found.reason}); "
          f"the {found.entries} entries before it hold, head {found.head}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
