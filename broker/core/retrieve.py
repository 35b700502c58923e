"""What a C-MOVE or a C-GET asks for: the stored resources its identifier names, as Orthanc 1.10's
``OrthancMoveRequestHandler`` and ``OrthancGetRequestHandler`` find them (no network here; the SCP is
``broker.dicom.retrieve_scp``).

The identifier names resources by one tag of its ``QueryRetrieveLevel``: ``PatientID``,
``StudyInstanceUID`` (or ``AccessionNumber``), ``SeriesInstanceUID`` or ``SOPInstanceUID``. A value may
be a list (``a\\b``); each item is matched exactly against the stored identifiers (case and surrounding
spaces ignored, as Orthanc's table of identifiers). Orthanc's two handlers differ, and so do these:

* a C-MOVE names a study by ``AccessionNumber`` when it is not empty, a C-GET whenever it is present
  (Ambra's C-MOVE sends an empty one next to the UID);
* a C-MOVE without ``QueryRetrieveLevel`` tries the instance, series, study and patient tags in turn,
  a C-GET is refused;
* in a C-MOVE an item that matches nothing is skipped, in a C-GET it fails the request.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.core.find import normalize
from broker.core.levels import Level

if TYPE_CHECKING:
    from broker.core.store import Store

#: The tag that names the resources of each level (Orthanc's ``LookupIdentifiers``).
IDENTIFIER_TAGS = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
                   Level.SERIES: "SeriesInstanceUID", Level.INSTANCE: "SOPInstanceUID"}
ACCESSION_NUMBER = "AccessionNumber"
#: A C-MOVE without a level: the levels tried, most specific first.
_GUESSED_LEVELS = (Level.INSTANCE, Level.SERIES, Level.STUDY, Level.PATIENT)


class NothingToRetrieve(Exception):
    """The identifier names no stored resource; the message says why (for the log)."""


@dataclass(frozen=True)
class Retrieval:
    """The resources a request names, at its level, in the order of its identifier."""

    level: Level
    resources: tuple[str, ...]


def resolve_move(store: Store, identifier: Mapping[str, str]) -> Retrieval:
    """The resources of a C-MOVE. ``identifier`` maps keywords to the text values of the request;
    raises ``NothingToRetrieve`` when there are none (Orthanc answers 0xC000)."""
    if "QueryRetrieveLevel" not in identifier:  # not standard (Tudor DICOM): the most specific tag present
        for level in _GUESSED_LEVELS:
            if _named(identifier, level, for_get=False) is not None:
                return _resolve(store, identifier, level, for_get=False)
        raise NothingToRetrieve("Invalid fields in a C-MOVE request")
    return _resolve(store, identifier, _level(identifier["QueryRetrieveLevel"]), for_get=False)


def resolve_get(store: Store, identifier: Mapping[str, str]) -> Retrieval:
    """The resources of a C-GET; raises ``NothingToRetrieve`` when the identifier names none, or names
    one that is not stored."""
    if "QueryRetrieveLevel" not in identifier:
        raise NothingToRetrieve("C-GET request without the tag 0008,0052 (QueryRetrieveLevel)")
    return _resolve(store, identifier, _level(identifier["QueryRetrieveLevel"]), for_get=True)


def instances_of(store: Store, retrieval: Retrieval) -> list[str]:
    """The instances of the resources, resource by resource (Orthanc's ``GetChildInstances``)."""
    return [instance for resource in retrieval.resources for instance in store.child_instances(resource)]


def _level(name: str) -> Level:
    try:
        return Level.from_name(name.strip())
    except KeyError:
        raise NothingToRetrieve(f"Unknown QueryRetrieveLevel: {name!r}") from None


def _named(identifier: Mapping[str, str], level: Level, *, for_get: bool) -> tuple[str, str] | None:
    """The tag that names the resources of ``level`` in the identifier and its value; None when absent."""
    tag = IDENTIFIER_TAGS[level]
    if level is Level.STUDY:
        accession = identifier.get(ACCESSION_NUMBER)
        if accession is not None and (for_get or accession.strip()):
            tag = ACCESSION_NUMBER
    value = identifier.get(tag)
    return None if value is None else (tag, value)


def _resolve(store: Store, identifier: Mapping[str, str], level: Level, *, for_get: bool) -> Retrieval:
    """The resources of ``level`` whose tag (``_named``) is one of the items of its value."""
    named = _named(identifier, level, for_get=for_get)
    if named is None:
        raise NothingToRetrieve(f"No identifier of the {level.label.lower()} level in the request")
    tag, value = named
    found: list[str] = []
    for item in value.split("\\"):
        matches = _lookup_exact(store, level, tag, item)
        if not matches and for_get:
            raise NothingToRetrieve(f'Cannot locate resource "{item}" at the {level.label.lower()} level')
        found += matches
    if not found:
        raise NothingToRetrieve(f"The request matches no stored resource ({tag} = {value!r})")
    return Retrieval(level, tuple(found))


def _lookup_exact(store: Store, level: Level, tag: str, value: str) -> list[str]:
    """Orthanc's ``LookupIdentifierExact``: the resources of ``level`` whose main tag ``tag`` is
    ``value`` (normalized as the identifiers are); an empty value names nothing."""
    wanted = normalize(value.strip())
    if not wanted:
        return []
    with store.index.read() as tx:
        return [row.public_id for row in tx.list_level(level)
                if normalize(tx.main_tags(row.internal_id)[0].get(tag, "").strip()) == wanted]
