"""The exports log: Orthanc's ``ExportedResources``, one row per resource a REST call sent to a
modality or a peer (``POST /modalities/{name}/store``, ``POST /peers/{name}/store``), written when
``LogExportedResources`` is true (Orthanc 1.10's default is false).

As in Orthanc, the row is written when the transfer is submitted, for each resource the request
names (not for each instance), with the identifiers of the resource and of its ancestors, so that the
log still says what left after the resource is deleted. ``GET /exports`` reads it, ``DELETE /exports``
empties it; sequence numbers are never reused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from broker.core.index import Index, IndexTransaction, ResourceRow
from broker.core.levels import Level
from broker.core.metadata import now_iso

#: The identifier each level adds to an export, in Orthanc's words (since Orthanc 0.8.6).
IDENTIFIERS = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
               Level.SERIES: "SeriesInstanceUID", Level.INSTANCE: "SOPInstanceUID"}


@dataclass(frozen=True, slots=True)
class ExportedResource:
    seq: int
    level: Level
    public_id: str
    remote: str
    date: str
    identifiers: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        """Orthanc's ``ExportedResource::Format``."""
        return {"Seq": self.seq, "ResourceType": self.level.label, "ID": self.public_id,
                "Path": f"/{self.level.plural}/{self.public_id}", "RemoteModality": self.remote,
                "Date": self.date, **self.identifiers}


@dataclass(frozen=True, slots=True)
class ExportsPage:
    exports: list[ExportedResource]
    done: bool
    last: int

    def to_json(self) -> dict[str, Any]:
        return {"Exports": [export.to_json() for export in self.exports], "Done": self.done, "Last": self.last}


_COLUMNS = "seq, level, public_id, remote, date, identifiers"


def _exported(row: tuple[Any, ...]) -> ExportedResource:
    seq, level, public_id, remote, date, identifiers = row
    return ExportedResource(seq, Level(level), public_id, remote, date, json.loads(identifiers))


def _identifiers(tx: IndexTransaction, row: ResourceRow) -> dict[str, str]:
    """The identifier of the resource and of each of its ancestors, from their main tags."""
    identifiers: dict[str, str] = {}
    current: ResourceRow | None = row
    while current is not None:
        name = IDENTIFIERS[current.level]
        main, _ = tx.main_tags(current.internal_id)
        identifiers[name] = main.get(name, "")
        current = tx.get(current.parent_id) if current.parent_id is not None else None
    return identifiers


class ExportsLog:
    def __init__(self, index: Index) -> None:
        self._index = index

    def log(self, public_id: str, remote: str) -> None:
        """Record that the resource ``public_id`` (of any level) was sent to ``remote``; an unknown id is
        not recorded (the transfer fails on it anyway)."""
        with self._index.write() as tx:
            row = tx.find(public_id)
            if row is None:
                return
            tx.connection.execute(
                "INSERT INTO exports (level, public_id, remote, date, identifiers) VALUES (?, ?, ?, ?, ?)",
                (int(row.level), row.public_id, remote, now_iso(), json.dumps(_identifiers(tx, row))))

    def page(self, since: int, limit: int) -> ExportsPage:
        """The exports after ``since``, at most ``limit`` of them; ``Last`` is the last one returned
        (``since`` when none)."""
        with self._index.read() as tx:
            rows = tx.connection.execute(f"SELECT {_COLUMNS} FROM exports WHERE seq > ? ORDER BY seq LIMIT ?",
                                         (since, limit + 1)).fetchall()
        exports = [_exported(row) for row in rows[:limit]]
        return ExportsPage(exports, len(rows) <= limit, exports[-1].seq if exports else since)

    def last(self) -> ExportsPage:
        with self._index.read() as tx:
            row = tx.connection.execute(f"SELECT {_COLUMNS} FROM exports ORDER BY seq DESC LIMIT 1").fetchone()
        exports = [_exported(row)] if row else []
        return ExportsPage(exports, True, exports[-1].seq if exports else 0)

    def clear(self) -> None:
        with self._index.write() as tx:
            tx.connection.execute("DELETE FROM exports")
