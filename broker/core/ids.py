"""Orthanc's resource identifiers.

An id is the SHA-1 of the DICOM identifiers of the resource and of its ancestors, joined with ``|``,
written as five dash-separated groups of 8 hex digits (``DicomInstanceHasher`` in Orthanc):

* patient: ``PatientID``
* study: ``PatientID|StudyInstanceUID``
* series: ``PatientID|StudyInstanceUID|SeriesInstanceUID``
* instance: ``PatientID|StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID``

The values are those Orthanc reads: trailing padding removed, leading spaces kept, and an absent
PatientID counts as the empty string.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


def format_sha1(text: str) -> str:
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


@dataclass(frozen=True, slots=True)
class ResourceIds:
    patient: str
    study: str
    series: str
    instance: str

    @classmethod
    def from_uids(cls, patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> ResourceIds:
        study_key = f"{patient_id}|{study_uid}"
        series_key = f"{study_key}|{series_uid}"
        return cls(format_sha1(patient_id), format_sha1(study_key), format_sha1(series_key),
                   format_sha1(f"{series_key}|{sop_uid}"))

    def chain(self) -> tuple[str, str, str, str]:
        """The ids from the patient down to the instance."""
        return (self.patient, self.study, self.series, self.instance)
