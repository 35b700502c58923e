"""The folder of modality worklists (``Worklists.Database``), as Orthanc's worklist plugins keep it: one
DICOM file per worklist, named ``{id}.wl`` (the extension in any case), Part-10 or a bare dataset.

The C-FIND SCP (``broker.dicom.worklist_scp``) reads every worklist at each query, so files written or
removed by another program are seen at once; the REST API (``broker.rest.worklists``) creates, lists,
reads and deletes them. A new file is written next to its final name and renamed into place, so a
query never reads half a worklist; an ID is a plain file name (no separator, not ``.`` or ``..``), so it
never names a file outside the folder.
"""
from __future__ import annotations

import logging
import os
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from broker.core.cfind import FindAnswers
from broker.core.dicom_file import file_meta, read_dataset
from broker.core.dicom_parse import DicomFormatError, parse_dicom
from broker.core.encodings import ENCODINGS
from broker.core.tags import (
    MODALITY,
    SCHEDULED_PROCEDURE_STEP_SEQUENCE,
    SCHEDULED_PROCEDURE_STEP_START_DATE,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from broker.core.worklist_query import WorklistMatcher, dataset_from_json
from broker.errors import ErrorCode, OrthancError

EXTENSION = ".wl"

log = logging.getLogger("luabroker.dicom")


def check_id(worklist_id: str) -> str:
    """A worklist ID that names a file of the folder, or 400 ``BadRequest``."""
    if worklist_id in ("", ".", "..") or any(c in worklist_id for c in "/\\\x00"):
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Invalid worklist ID: {worklist_id!r}")
    return worklist_id


class WorklistFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def files(self) -> list[Path]:
        """The worklist files, by name (Orthanc takes the order of the directory)."""
        try:
            entries = sorted(self.folder.iterdir())
        except OSError as exc:
            raise OrthancError(ErrorCode.INEXISTENT_FILE,
                               f"Inexistent folder while scanning for worklists: {self.folder} ({exc})") from None
        return [path for path in entries if path.suffix.lower() == EXTENSION and path.is_file()]

    def find(self, matcher: WorklistMatcher, answers: WorklistMatcher, limit: int) -> FindAnswers:
        """The worklists that ``matcher`` matches, each reduced to the tags of ``answers`` (the query
        before ``FilterIssuerAet`` restricted it, as in Orthanc), without SOPInstanceUID (Orthanc's
        ``DicomFindAnswers`` removes it to answer as DCMTK's ``wlmscpfs``). With a limit, as Orthanc's
        plugin: the answer past the limit is sent too, then the answers are incomplete."""
        found: list[dict[int, Any]] = []
        for path in self.files():
            worklist = self._read(path)
            if worklist is None or not matcher.matches(worklist):
                continue
            answer = answers.extract(worklist)
            answer.pop(SOP_INSTANCE_UID, None)
            found.append(answer)
            if limit and len(found) > limit:
                return FindAnswers(found, complete=False)
        log.info("Worklist C-FIND: %d match(es) in %s", len(found), self.folder)
        return FindAnswers(found, complete=True)

    @staticmethod
    def _read(path: Path) -> Dataset | None:
        """The worklist of ``path``; None if it was removed since the listing. A file that is not DICOM
        fails the query, as in Orthanc."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            parse_dicom(data)  # pydicom reads anything; this parser says whether it is DICOM
        except DicomFormatError as exc:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"The worklist {path.name} is not DICOM: {exc}") from None
        return read_dataset(data)

    def ids(self) -> list[str]:
        return [path.name[:-len(EXTENSION)] for path in self.files()]

    def path_of(self, worklist_id: str) -> Path:
        return self.folder / (check_id(worklist_id) + EXTENSION)

    def read(self, worklist_id: str) -> bytes:
        try:
            return self.path_of(worklist_id).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "Worklist not found") from None

    def write(self, worklist_id: str, data: bytes) -> None:
        """Write (or replace) a worklist: to a temporary file of the folder, then renamed into place."""
        target = self.path_of(worklist_id)
        try:
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        except OSError as exc:
            raise OrthancError(ErrorCode.CANNOT_WRITE_FILE, f"Cannot write in {self.folder}: {exc}") from None
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise OrthancError(ErrorCode.CANNOT_WRITE_FILE, f"Cannot write the worklist {target.name}: {exc}") \
                from None

    def delete(self, worklist_id: str) -> None:
        path = self.path_of(worklist_id)
        if not path.is_file():
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, "Worklist not found")
        path.unlink(missing_ok=True)


def worklist_file(body: Any, *, force: bool, study_uid_if_missing: bool) -> bytes:
    """The file of a worklist created or replaced through the REST API, as Orthanc's worklists plugin
    (1.12.10) makes it from ``{"Tags": {tag: value}, "Force": bool}``: the tags as for
    ``/tools/create-dicom`` (in UTF-8 unless ``SpecificCharacterSet`` says otherwise); unless forced, a
    ScheduledProcedureStepSequence whose first item has a Modality and a ScheduledProcedureStepStartDate;
    a new StudyInstanceUID when it has none (``SetStudyInstanceUidIfMissing``)."""
    if not isinstance(body, dict) or not isinstance(body.get("Tags"), dict):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "'Tags' field is missing or not a JSON object")
    if "Force" in body:
        if not isinstance(body["Force"], bool):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "'Force' must be a Boolean")
        force = body["Force"]
    tags = dict(body["Tags"])
    tags.setdefault("SpecificCharacterSet", ENCODINGS["Utf8"].term)
    ds = dataset_from_json(tags, ENCODINGS["Utf8"])
    if not force:
        steps = ds.get(SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        if steps is None:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "'Tags' is missing a 'ScheduledProcedureStepSequence'. "
                                                          "Use 'Force': true to bypass this check.")
        first = steps.value[0] if steps.VR == "SQ" and steps.value else Dataset()
        for tag, name in ((MODALITY, "Modality"),
                          (SCHEDULED_PROCEDURE_STEP_START_DATE, "ScheduledProcedureStepStartDate")):
            if tag not in first:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"'ScheduledProcedureStepSequence' is missing a "
                                                              f"'{name}'. Use 'Force': true to bypass this check.")
    if study_uid_if_missing and STUDY_INSTANCE_UID not in ds:
        ds.StudyInstanceUID = generate_uid()
    # A worklist has no SOPInstanceUID: its file meta gets a new one, as DCMTK writes it for Orthanc.
    ds.file_meta = file_meta(None, generate_uid(), ExplicitVRLittleEndian)
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
