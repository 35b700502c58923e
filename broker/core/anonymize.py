"""Orthanc 1.10's anonymization: the DICOM PS3.15 basic profile as Orthanc implements it.

``anonymization_request(body, next_patient_name=...)`` is Orthanc's ``ParseAnonymizationRequest``
followed by what its REST layer adds: it loads a profile (``DicomVersion``: ``"2021b"`` by default,
``"2017c"``, ``"2008"``), then the user's ``KeepPrivateTags``, ``Remove``, ``Replace``, ``Keep`` and
``PrivateCreator``, and returns a ``ModifyRequest`` at the ``Patient`` level, which
``broker.core.modify.Modifier`` applies like any modification.

A profile (``data/anonymization-profiles.json``, measured on Orthanc 1.10.1, see the comment there):

* ``remove``: the tags removed (first level, and inside sequences);
* ``clear``: the tags emptied when present (inside sequences: a string is emptied, anything else removed);
* ``uid``: the identifiers replaced by new ones, the same original value always getting the same new
  value within one request (also inside sequences);
* private tags are removed (first level and inside sequences) unless ``KeepPrivateTags``;
* StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID are regenerated (everywhere, consistently);
* PatientID is replaced by a random UUID (one per original PatientID), PatientName by
  ``Anonymized<N>``, N a counter kept by the server (``next_patient_name``), unless the request
  replaces, removes or keeps PatientName; PatientName inside sequences is kept as it is (Orthanc's
  behaviour);
* PatientIdentityRemoved is set to ``YES`` and DeidentificationMethod to the profile's text, which is
  dropped as soon as the request changes the profile (any ``Keep``, ``Remove`` or ``Replace``, or
  ``KeepPrivateTags``), as Orthanc does.

DeidentificationMethod reads ``luabroker <version> - PS 3.15-2021b Table E.1-1 Basic Profile`` where
Orthanc writes ``Orthanc 1.10.1 - ...``: the file says which software de-identified it.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import __version__
from broker.core.levels import Level
from broker.core.modify_request import ModifyRequest, read_boolean
from broker.core.tags import DEIDENTIFICATION_METHOD, PATIENT_ID, PATIENT_IDENTITY_REMOVED, PATIENT_NAME
from broker.errors import ErrorCode, OrthancError

PROFILES_PATH = Path(__file__).with_name("data") / "anonymization-profiles.json"
DEFAULT_DICOM_VERSION = "2021b"
ANONYMIZATION_SEQUENCE = "AnonymizationSequence"


def deidentification_method(version: str) -> str:
    """The DeidentificationMethod written by a profile (Orthanc's text, with this software's name)."""
    if version == "2008":
        return f"luabroker {__version__} - PS 3.15-2008 Table E.1-1"
    return f"luabroker {__version__} - PS 3.15-{version} Table E.1-1 Basic Profile"


@functools.lru_cache(maxsize=1)
def profiles() -> dict[str, dict[str, frozenset[int]]]:
    raw = json.loads(PROFILES_PATH.read_text())
    return {version: {kind: frozenset(int(tag, 16) for tag in tags) for kind, tags in groups.items()}
            for version, groups in raw.items() if not version.startswith("_")}


def setup_anonymization(version: str = DEFAULT_DICOM_VERSION) -> ModifyRequest:
    """Orthanc's ``SetupAnonymization``: a request holding the profile only."""
    table = profiles().get(version)
    if table is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           f"Unknown specific version of the DICOM standard: {version}")
    own = frozenset(deidentification_method(v) for v in profiles())
    request = ModifyRequest(level=Level.PATIENT, is_anonymization=True, remove_private_tags=True,
                            own_deidentification_methods=own)
    request.removals = set(table["remove"])
    request.clearings = set(table["clear"])
    request.uids = set(table["uid"]) | {PATIENT_ID, PATIENT_NAME}
    request.replacements[DEIDENTIFICATION_METHOD] = deidentification_method(version)
    request.replacements[PATIENT_IDENTITY_REMOVED] = "YES"
    return request


def anonymization_request(body: Any, *, next_patient_name: Callable[[], str] | None = None) -> ModifyRequest:
    """Parse the body of ``/anonymize`` (``Force``, ``DicomVersion``, ``KeepPrivateTags``, ``Remove``,
    ``Replace``, ``Keep``, ``PrivateCreator``). ``next_patient_name()`` gives ``Anonymized<N>``; it is
    called only when the request leaves PatientName to the profile."""
    if not isinstance(body, dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "The anonymization request must be a JSON object")
    force = read_boolean(body, "Force", False)
    version = DEFAULT_DICOM_VERSION
    if "DicomVersion" in body:
        if not isinstance(body["DicomVersion"], str):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, '"DicomVersion" must be a string')
        version = body["DicomVersion"]
    request = setup_anonymization(version)
    if read_boolean(body, "KeepPrivateTags", False):
        request.set_remove_private_tags(False)
    request.parse_common(body, force)
    if PATIENT_NAME in request.uids and next_patient_name is not None:
        request.replace_tag(PATIENT_NAME, next_patient_name(), safe_for_anonymization=True)
    return request
