"""The C-FIND SCU queries kept for ``/queries/{id}`` (Orthanc's ``QueryRetrieveHandler`` in its
``SharedArchive``).

A query is run once, when it is made, and kept with what a later retrieve needs: the modality as it
was configured then, the level, the query as asked (before normalization and before
``OutgoingFindRequestFilter``), the calling AET and the timeout. The archive keeps the last
``QueryRetrieveSize`` queries: adding one more drops the least recently used (reading a query uses it).
Nothing survives a restart, as in Orthanc.
"""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from broker.config.network import Modality
from broker.core.levels import Level
from broker.dicom.find_scu import Answer
from broker.errors import ErrorCode, OrthancError


@dataclass(frozen=True)
class StoredQuery:
    """One query and its answers."""

    #: The symbolic name of the modality (``/queries/{id}/modality``).
    modality_name: str
    modality: Modality
    level: Level
    #: The query as asked (``/queries/{id}/query``).
    query: dict[int, str]
    normalize: bool
    #: The calling AET asked in the request (the modality's ``LocalAet`` comes first); None for ``DicomAet``.
    local_aet: str | None
    #: The ``Timeout`` of the request, None when it had none.
    timeout: float | None
    answers: list[Answer]

    def answer(self, index: str) -> Answer:
        """The answer at ``index`` (its text in the URI): Orthanc's ``ParameterOutOfRange`` past the end."""
        if not index.isdigit() or int(index) >= len(self.answers):
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        return self.answers[int(index)]


class QueryArchive:
    """The kept queries, by id (a UUID), the least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._queries: OrderedDict[str, StoredQuery] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, query: StoredQuery) -> str:
        identifier = str(uuid.uuid4())
        with self._lock:
            while len(self._queries) >= self.size:
                self._queries.popitem(last=False)
            self._queries[identifier] = query
        return identifier

    def get(self, identifier: str) -> StoredQuery:
        """The query (now the most recently used); ``UnknownResource`` when it is not kept."""
        with self._lock:
            query = self._queries.get(identifier)
            if query is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            self._queries.move_to_end(identifier)
            return query

    def ids(self) -> list[str]:
        """The ids of the kept queries, sorted (Orthanc lists its map)."""
        with self._lock:
            return sorted(self._queries)

    def remove(self, identifier: str) -> None:
        """Forget a query; an unknown id is not an error (Orthanc answers 200)."""
        with self._lock:
            self._queries.pop(identifier, None)
