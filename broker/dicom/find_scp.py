"""C-FIND SCP: Patient Root and Study Root, answered from the index (``broker.core.cfind``).

The handler of ``EVT_C_FIND`` follows Orthanc 1.10's ``FindScp`` and ``OrthancFindRequestHandler``:

1. the calling AET must be allowed to query: ``DicomAlwaysAllowFind``, or a modality of
   ``DicomModalities`` with this AET whose ``AllowFind`` is true; otherwise the association is aborted
   (Orthanc answers ``DIMSE_ILLEGALASSOCIATION`` and closes it);
2. the identifier becomes a flat query, tag → text, decoded with its ``SpecificCharacterSet``:
   groups below 0008 are dropped, sequences are set apart (they are returned, never matched);
3. ``IncomingFindRequestFilter(query, origin)`` may replace the query (``broker.scripting.filters``);
4. the answers are computed at once and sent as pending responses, each encoded in the server's
   ``DefaultEncoding`` (with its ``SpecificCharacterSet``); a value that cannot be encoded in its VR is
   left out, as Orthanc's permissive mode does. The last response is Success, or 0xFE00 when
   ``LimitFindResults``/``LimitFindInstances`` cut the answers (Orthanc's status for that case).

Any failure (no or a bad ``QueryRetrieveLevel``, a filter that fails or times out, an unreadable
file) answers 0xC000, ``Failed: Unable to process``, as Orthanc does; the association stays open.

C-CANCEL (``honour_cancel``), as DCMTK's ``DIMSE_findProvider`` under Orthanc: before each response it looks
for a C-CANCEL of the request, the first time before the query runs; once it saw one, the response it was
about to send becomes the last one, 0xFE00 (DCMTK also attaches that response's answer, a slip it makes
freeing the wrong dataset; here, as the standard says, a Cancel response has no identifier).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom import evt

from broker.core.cfind import FindAnswers, FindRequest
from broker.core.dicom_file import element_text
from broker.core.elements import BINARY_VRS, dataset_of
from broker.dicom.permissions import allowed_or_aborted
from broker.errors import OrthancError
from broker.scripting.filters import filtered_find_query

if TYPE_CHECKING:
    from broker.services import Services

log = logging.getLogger("luabroker.dicom")

SUCCESS = 0x0000
PENDING = 0xFF00
MATCHING_TERMINATED = 0xFE00  # "Cancel: matching terminated due to cancel request", Orthanc's "too many answers"
UNABLE_TO_PROCESS = 0xC000

#: A C-FIND response: its status and its identifier (an answer, with Pending only).
Response = tuple[int, Dataset | None]


def query_text(element: DataElement) -> str:
    """A query element as Orthanc's ``DicomMap`` holds it: ``element_text``, but ``""`` for a binary value."""
    if element.VR in BINARY_VRS or isinstance(element.value, bytes):
        return ""
    return element_text(element)


def honour_cancel(event: evt.Event, responses: Iterator[Response]) -> Iterator[Response]:
    """``responses``, cut by a C-CANCEL of the request (pynetdicom keeps the C-CANCELs it receives aside;
    ``event.is_cancelled`` takes this request's). Each response is computed after the check, as DCMTK
    calls Orthanc's handler after its check: the first check precedes the query."""
    for_next_response = event.is_cancelled
    for status, identifier in responses:
        if for_next_response:
            yield MATCHING_TERMINATED, None
            return
        yield status, identifier
        for_next_response = event.is_cancelled


def read_query(identifier: Dataset) -> tuple[dict[int, str], tuple[int, ...]]:
    """The flat query of an identifier, and the sequences it asks for (Orthanc's ``FixFindQuery``:
    nothing below group 0008, which holds the file meta and the command)."""
    query: dict[int, str] = {}
    sequences: list[int] = []
    for element in identifier:
        tag = int(element.tag)
        if element.VR == "SQ":
            sequences.append(tag)
        elif tag >> 16 >= 0x0008:
            query[tag] = query_text(element)
    return query, tuple(sequences)


class FindScp:
    """The handler of ``EVT_C_FIND`` for the query/retrieve models; ``broker.dicom.worklist_scp`` serves
    the worklist model with the same handler, another permission and another search (``find``)."""

    #: The modality's permission, the option that allows every caller, and the name in the logs.
    permission, always_option, always_name, label = ("allow_find", "dicom_always_allow_find",
                                                      "DicomAlwaysAllowFind", "C-FIND")

    def __init__(self, services: Services) -> None:
        self.services = services

    def handle_find(self, event: evt.Event) -> Iterator[Response]:
        assoc = event.assoc
        remote_aet, remote_ip = assoc.requestor.ae_title, assoc.requestor.address
        if not allowed_or_aborted(event, self.services.network, self.permission,
                                  always=getattr(self.services.config, self.always_option), option=self.always_name,
                                  label=self.label):
            yield UNABLE_TO_PROCESS, None
            return
        yield from honour_cancel(event, self.responses(event, remote_aet, remote_ip))

    def responses(self, event: evt.Event, remote_aet: str, remote_ip: str) -> Iterator[Response]:
        """Every response, the final one included; the query runs when the first is asked for."""
        try:
            found = self.find(event, remote_aet, remote_ip)
        except Exception as exc:  # every failure is Orthanc's status, never a dropped association
            (log.warning if isinstance(exc, OrthancError) else log.exception)(
                "%s from %s failed with status 0x%04X: %s", self.label, remote_aet, UNABLE_TO_PROCESS, exc)
            yield UNABLE_TO_PROCESS, None
            return
        encoding = self.services.store.default_encoding
        for answer in found.answers:
            yield PENDING, dataset_of(answer, encoding, permissive=True)
        if not found.complete:
            log.warning("Too many results for an incoming %s query", self.label)
        yield (SUCCESS if found.complete else MATCHING_TERMINATED), None

    def find(self, event: evt.Event, remote_aet: str, remote_ip: str) -> FindAnswers:
        services, config = self.services, self.services.config
        query, sequences = read_query(event.identifier)
        request = event.assoc.requestor.primitive
        called = str(request.called_ae_title).strip() if request else config.dicom_aet
        modalities = services.network.modalities_with_aet(remote_aet)
        filtered = filtered_find_query(services.scripts, query, remote_ip, remote_aet, called,
                                       modalities[0][1].manufacturer if modalities else "Generic")
        return services.store.cfind(FindRequest(
            query if filtered is None else filtered, sequences, config.case_sensitive_pn,
            config.limit_find_results, config.limit_find_instances, config.dicom_aet))
