"""Names and value representations of DICOM tags, as Orthanc (that is, DCMTK) reports them.

* Public tags: pydicom's data dictionary, with DCMTK's conventions on top: a retired tag is named
  ``RETIRED_<keyword>`` (as of DCMTK 3.6.7, the version Orthanc 1.10 uses on Debian), group lengths
  are ``GenericGroupLength``/``PrivateGroupLength``, and a tag missing from the dictionary is
  ``Unknown Tag & Data``. The main DICOM tags keep Orthanc's names (``OtherPatientIDs``), as Orthanc
  patches them in.
* Private tags: DCMTK's own private dictionary (``data/dcmtk-private.dic``, the file Orthanc loads),
  looked up by (private creator, group, element) exactly, then by the element's low byte, as DCMTK
  does. A private creator element ``(gggg,00xx)`` is named ``PrivateCreator``.

The VR is needed only for implicit-VR files, where the file does not say it.
"""
from __future__ import annotations

import functools
import re
import threading
from pathlib import Path

from pydicom.datadict import get_entry

from broker.core.maintags import MAIN_DICOM_TAGS

UNKNOWN_TAG_NAME = "Unknown Tag & Data"
PRIVATE_DICTIONARY_PATH = Path(__file__).with_name("data") / "dcmtk-private.dic"

# Retired in pydicom's (newer) dictionary, not yet in DCMTK 3.6.7's.
_NOT_RETIRED_IN_DCMTK = frozenset({0x00380004, 0x00701807, 0x00701808, 0x30040010, 0x30040012, 0x30060085,
                                   0x30060088, 0x3008002B, 0x30100090})
_MAIN_TAG_NAMES = {tag: name for tags in MAIN_DICOM_TAGS.values() for tag, name in tags}


@functools.lru_cache(maxsize=16384)
def public_entry(tag: int) -> tuple[str, str] | None:
    """(name, VR) of a tag outside a private block, or None when the dictionary does not know it."""
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0x0000:
        if group == 0x0002:
            return "FileMetaInformationGroupLength", "UL"
        if group & 1:
            return ("PrivateGroupLength" if group >= 0x0009 else "IllegalGroupLength"), "UL"
        return "GenericGroupLength", "UL"
    if group & 1:
        if 0x0010 <= element <= 0x00FF:
            return ("PrivateCreator" if group >= 0x0009 else "IllegalPrivateCreator"), "LO"
        return None
    try:
        vr, _vm, _description, retired, keyword = get_entry(tag)
    except KeyError:
        return None
    if tag in _MAIN_TAG_NAMES:
        return _MAIN_TAG_NAMES[tag], vr
    if not keyword:
        return None
    return (f"RETIRED_{keyword}" if retired and tag not in _NOT_RETIRED_IN_DCMTK else keyword), vr


def private_entry(tag: int, creator: str) -> tuple[str, str] | None:
    """(name, VR) of a private data element whose block belongs to ``creator``, or None."""
    table = _private_table()
    group, element = tag >> 16, tag & 0xFFFF
    entry = table.get((creator, group, element))
    if entry is None:
        entry = table.get((creator, group, element & 0xFF))
    return entry


@functools.lru_cache(maxsize=65536)
def tag_name(tag: int, creator: str | None) -> str:
    """The name Orthanc shows for ``tag`` (``creator``: the private creator of its block, if any)."""
    if creator is not None:
        entry = private_entry(tag, creator)
    else:
        entry = public_entry(tag)
    return entry[0] if entry is not None else UNKNOWN_TAG_NAME


def dictionary_vr(tag: int, creator: str | None) -> str:
    """The VR the dictionary gives ``tag`` (for implicit-VR files); ``UN`` when it is unknown."""
    entry = private_entry(tag, creator) if creator is not None else public_entry(tag)
    return entry[1] if entry is not None else "UN"


# DCMTK's private.dic lines look like ``(0009,"GEMS_IDEN_01",01)<TAB>LO<TAB>FullFidelity<TAB>1<TAB>...``;
# a group may be a range of odd groups (``7001-o-70ff``) and an element has 2 (low byte) or 4 digits.
_LINE = re.compile(r'^\((?P<group>[0-9A-Fa-f]{4})(?:-o-(?P<last>[0-9A-Fa-f]{4}))?,"(?P<creator>[^"]*)",'
                   r'(?P<element>[0-9A-Fa-f]{2}|[0-9A-Fa-f]{4})\)$')
_lock = threading.Lock()
_table: dict[tuple[str, int, int], tuple[str, str]] | None = None


def _private_table() -> dict[tuple[str, int, int], tuple[str, str]]:
    global _table
    if _table is None:
        with _lock:
            if _table is None:
                _table = _load_private_dictionary(PRIVATE_DICTIONARY_PATH)
    return _table


def _load_private_dictionary(path: Path) -> dict[tuple[str, int, int], tuple[str, str]]:
    table: dict[tuple[str, int, int], tuple[str, str]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        match = _LINE.match(fields[0])
        if match is None or len(fields) < 3:
            continue
        # DCMTK strips every whitespace character of these fields, inner ones included.
        vr, name = "".join(fields[1].split()), "".join(fields[2].split())
        first = int(match["group"], 16)
        last = int(match["last"], 16) if match["last"] else first
        element = int(match["element"], 16)
        for group in range(first, last + 1, 2):
            table[(match["creator"], group, element)] = (name, vr or "UN")
    return table
