"""C-FIND SCU: querying a modality of ``DicomModalities``, as Orthanc 1.10's
``DicomControlUserConnection::Find``.

The query is a flat map, tag → text (Orthanc's ``DicomMap``). Before it is sent:

1. with ``normalize`` (the default of ``/modalities/{name}/query``), the tags that do not belong to the
   level are dropped: the modules (``broker.core.modules``) of the level and of the levels above, the
   counters of the level (``NumberOfStudyRelatedSeries``, ...) and ``SpecificCharacterSet``. For the
   manufacturers ``GenericNoUniversalWildcard`` (any tag) and ``GenericNoWildcardInDates`` (dates), a
   ``*`` becomes ``""``;
2. it is encoded in the server's ``DefaultEncoding`` (in the one its ``SpecificCharacterSet`` names, if
   any), strictly: a value its VR cannot hold (``Rows`` = ``*``) fails the query;
3. ``QueryRetrieveLevel`` is set (``IMAGE`` for instances) and the identifiers of the level and of the
   levels above are asked when the query does not have them (empty, ``*`` for ``GE``).

Patient Root is used at the patient level, Study Root at the others. The association proposes what
Orthanc's proposes for C-FIND and C-MOVE alike (``CONTROL_PROPOSAL``): Verification, the C-FIND and
C-MOVE models of both roots and the worklist model, in Explicit Little and Big Endian and Implicit
Little Endian. Each answer is read
as Orthanc keeps it (a flat map: sequences dropped, binary values null, no length limit), with its
``QueryRetrieveLevel`` when the peer left it out, then stored in the ``DefaultEncoding`` (with its
``SpecificCharacterSet``; what the encoding cannot hold, or the VR, is dropped).

A final status other than Success fails the query (Orthanc's ``NetworkProtocol``; 0xC000 answers HTTP
422), 0xFE00 too (what Orthanc's own SCP answers when ``LimitFindResults`` cut the answers).
The association is opened by ``StoreScu`` (the same rules for the calling AET, the timeouts and
``TCP_NODELAY`` as C-STORE and C-ECHO) and released at the end of each query. The calling AET is the
modality's ``LocalAet``, else the one asked, else ``DicomAet``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from broker.config.network import Modality
from broker.core.cfind import COUNTERS
from broker.core.dicom_json import Charset, summary
from broker.core.dictionary import dictionary_vr
from broker.core.elements import dataset_of, elements_of
from broker.core.encodings import Encoding, encoding_of_term
from broker.core.levels import Level
from broker.core.modules import MODULE_TAGS
from broker.core.tags import (
    ACCESSION_NUMBER,
    PATIENT_ID,
    QUERY_RETRIEVE_LEVEL,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    format_tag,
)
from broker.dicom.scu import DicomNetworkError, StoreScu
from broker.dicom.sockets import pause_reactor
from broker.errors import ErrorCode, OrthancError

log = logging.getLogger("luabroker.dicom")

#: An answer as Orthanc keeps it: tag → text, None for a null (binary) value.
Answer = dict[int, str | None]

#: The tags of the file meta information Orthanc copies from the dataset's.
_MEDIA_STORAGE = {SOP_CLASS_UID: 0x00020002, SOP_INSTANCE_UID: 0x00020003}
#: The value of ``QueryRetrieveLevel`` at each level.
LEVEL_NAMES = {Level.PATIENT: "PATIENT", Level.STUDY: "STUDY", Level.SERIES: "SERIES", Level.INSTANCE: "IMAGE"}
#: The identifiers asked at each level when the query has not them, in addition to those of the level above.
_IDENTIFIERS = {Level.PATIENT: (PATIENT_ID,), Level.STUDY: (ACCESSION_NUMBER, STUDY_INSTANCE_UID),
                Level.SERIES: (SERIES_INSTANCE_UID,), Level.INSTANCE: (SOP_INSTANCE_UID,)}
#: Orthanc's "generic" presentation contexts.
GENERIC_SYNTAXES = frozenset({str(ExplicitVRLittleEndian), str(ExplicitVRBigEndian), str(ImplicitVRLittleEndian)})
#: What Orthanc's ``DicomControlUserConnection`` proposes, for C-FIND and C-MOVE alike.
CONTROL_PROPOSAL = {str(model): set(GENERIC_SYNTAXES) for model in (
    Verification, PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove,
    ModalityWorklistInformationFind)}
_PENDING = (0xFF00, 0xFF01)
_UNABLE_TO_PROCESS = 0xC000


def normalized(query: Mapping[int, str], level: Level) -> dict[int, str]:
    """The tags of ``query`` that belong to a query at ``level`` (Orthanc's ``NormalizeFindQuery``)."""
    allowed = {SPECIFIC_CHARACTER_SET, *(tag for tag, at in COUNTERS.items() if at is level)}
    for upper in Level:
        if upper <= level:
            allowed.update(MODULE_TAGS[upper])
    kept = {}
    for tag, value in query.items():
        if tag in allowed:
            kept[tag] = value
        else:
            log.warning("Tag not allowed for this C-Find level, will be ignored: (%s)", format_tag(tag))
    return kept


def without_universal_wildcards(query: Mapping[int, str], manufacturer: str) -> dict[int, str]:
    """Orthanc's fix for the peers that refuse ``*`` as universal matching: ``""`` instead, on every
    tag (``GenericNoUniversalWildcard``) or on the dates (``GenericNoWildcardInDates``)."""
    if manufacturer == "GenericNoUniversalWildcard":
        return {tag: "" if value == "*" else value for tag, value in query.items()}
    if manufacturer == "GenericNoWildcardInDates":
        return {tag: "" if value == "*" and dictionary_vr(tag, None) == "DA" else value for tag, value in query.items()}
    return dict(query)


def read_answer(identifier: Dataset, encoding: Encoding) -> Answer:
    """A dataset as Orthanc's ``ExtractDicomSummary`` reads it (``encoding`` when it says none): the
    top-level leaves, binary values null, no length limit."""
    if not len(identifier):
        return {}
    elements = elements_of(identifier)
    return summary(elements, charset=Charset.of(elements, encoding), truncate=False)


def identifier_of(query: Mapping[int, str], default: Encoding) -> Dataset:
    """The identifier of a C-FIND or C-MOVE request, as Orthanc makes it (strictly): in the encoding
    its ``SpecificCharacterSet`` names, else ``default``."""
    term = query.get(SPECIFIC_CHARACTER_SET, "")
    encoding = encoding_of_term(term) if term else default
    if encoding is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           f'Unsupported value for the SpecificCharacterSet (0008,0005) tag: "{term}"')
    return dataset_of(query, encoding, permissive=False)


def _kept(answer: Answer, level: Level, encoding: Encoding) -> Answer:
    """An answer as Orthanc keeps it: with its ``QueryRetrieveLevel``, then made a dataset in
    ``encoding`` (permissively) and read back. Making it, Orthanc copies the SOP Class and Instance UIDs
    to the Media Storage ones (0002,0002 and 0002,0003), which its answers then show."""
    answer.setdefault(QUERY_RETRIEVE_LEVEL, LEVEL_NAMES[level])
    kept = read_answer(dataset_of(answer, encoding, permissive=True), encoding)
    for tag, media in _MEDIA_STORAGE.items():
        if kept.get(tag) is not None:
            kept[media] = kept[tag]
    return kept


class FindScu:
    """C-FIND to the modalities, over associations opened by a ``StoreScu``."""

    def __init__(self, scu: StoreScu) -> None:
        self.scu = scu

    def find(self, modality: Modality, level: Level, query: Mapping[int, str], *, normalize: bool,
             encoding: Encoding, local_aet: str | None = None, timeout: float | None = None) -> list[Answer]:
        """The answers of ``modality`` to ``query`` at ``level``, in the order received. Raises
        ``DicomNetworkError`` when the association or the C-FIND fails, ``OrthancError`` for a value its
        VR cannot hold or a peer that accepted no C-FIND context."""
        fields = dict(query)
        if normalize:
            fields = without_universal_wildcards(normalized(fields, level), modality.manufacturer)
        fields[QUERY_RETRIEVE_LEVEL] = LEVEL_NAMES[level]
        universal = "*" if modality.manufacturer == "GE" else ""
        for upper in Level:
            if upper <= level:
                for tag in _IDENTIFIERS[upper]:
                    fields.setdefault(tag, universal)
        identifier = identifier_of(fields, encoding)
        model = PatientRootQueryRetrieveInformationModelFind if level is Level.PATIENT \
            else StudyRootQueryRetrieveInformationModelFind
        # StoreScu's association helpers: the one place for DICOM TLS, the timeouts, TCP_NODELAY and the
        # errors of an association.
        scu = self.scu
        remote = scu.remote(modality)
        local = remote.local_aet or local_aet or scu.options.default_aet
        link = scu.associate(remote, local, CONTROL_PROPOSAL, timeout=timeout, operation="C-FIND")
        try:
            if not any(cx.abstract_syntax == model for cx in link.assoc.accepted_contexts):
                raise OrthancError(ErrorCode.DICOM_FIND_UNAVAILABLE, f"Remote AET is {remote.aet}")
            return self._exchange(link.assoc, remote, identifier, model, level, encoding)
        finally:
            scu.release(link)

    def find_worklist(self, modality: Modality, query: Dataset, *, timeout: float | None = None) -> list[Dataset]:
        """The answers of ``modality`` to a worklist ``query`` (Orthanc's ``FindWorklist``), whole: as
        Orthanc keeps a worklist answer, with its sequences. The calling AET is the modality's
        ``LocalAet``, else ``DicomAet``."""
        scu = self.scu
        remote = scu.remote(modality)
        link = scu.associate(remote, remote.local_aet or scu.options.default_aet, CONTROL_PROPOSAL, timeout=timeout,
                             operation="C-FIND")
        answers: list[Dataset] = []
        try:
            if not any(cx.abstract_syntax == ModalityWorklistInformationFind for cx in link.assoc.accepted_contexts):
                raise OrthancError(ErrorCode.DICOM_FIND_UNAVAILABLE, f"Remote AET is {remote.aet}")
            pause_reactor(link.assoc)
            responses = link.assoc.send_c_find(query, ModalityWorklistInformationFind)
            check_find_status(final_status(responses, remote, "C-FIND", answers.append), remote)
        finally:
            scu.release(link)
        return answers

    @staticmethod
    def _exchange(assoc: Association, remote: Modality, identifier: Dataset, model: str, level: Level,
                  encoding: Encoding) -> list[Answer]:
        answers: list[Answer] = []
        pause_reactor(assoc)
        check_find_status(final_status(assoc.send_c_find(identifier, model), remote, "C-FIND",
                                       lambda found: answers.append(_kept(read_answer(found, encoding), level,
                                                                         encoding))), remote)
        return answers


def final_status(responses: Iterator[tuple[Dataset, Dataset | None]], remote: Modality, operation: str,
                 pending: Callable[[Dataset], object] | None = None) -> int:
    """The final status of a C-FIND, C-MOVE or C-GET, each identifier of a pending response given to
    ``pending``; ``DicomNetworkError`` when the association was lost or no answer came in time."""
    for status, found in responses:
        code = status.get("Status") if status else None
        if code is None:
            raise DicomNetworkError(f'DicomAssociation - {operation} to AET "{remote.aet}": the association was '
                                    "aborted, or no answer came within the timeout")
        if code not in _PENDING:
            return int(code)
        if found is not None and pending is not None:
            pending(found)
    raise DicomNetworkError(f'{operation} to AET "{remote.aet}": no final response')


def check_find_status(code: int, remote: Modality) -> None:
    """Orthanc's failure of a C-FIND that did not end in Success (0xC000: 422)."""
    if code == 0x0000:
        return
    failed = f'C-FIND SCU to AET "{remote.aet}" has failed with DIMSE status 0x{code:04X}'
    if code == _UNABLE_TO_PROCESS:
        raise OrthancError(ErrorCode.NETWORK_PROTOCOL, failed + " (unable to process - invalid query ?)",
                           http_status=422)
    raise OrthancError(ErrorCode.NETWORK_PROTOCOL, failed)
