"""C-FIND SCP on the Modality Worklist Information Model, answered from the folder of worklists
(``broker.core.worklists``), as Orthanc with its sample worklist plugin answers it.

The handler follows Orthanc's ``FindScp`` for worklists, its ``WorklistHandler`` and the plugin:

1. the calling AET must be allowed to query the worklists: ``DicomAlwaysAllowFindWorklist``, or a
   modality of ``DicomModalities`` with this AET whose ``AllowFindWorklist`` is true; otherwise the
   association is aborted, as for the other C-FINDs;
2. the identifier is the query, fixed as DCMTK's ``wlmscpfs`` does (``fix_query``);
3. ``IncomingWorklistRequestFilter(query, origin)`` may replace it (``broker.scripting.filters``);
4. the query is matched against every worklist (``WorklistMatcher``); with ``FilterIssuerAet``, against
   the query restricted to the worklists scheduled for the calling AET, while the answers keep the tags
   of the query before that restriction, as in Orthanc;
5. the answers are sent as pending responses in the server's ``DefaultEncoding``; the last response
   is Success, or 0xFE00 when ``LimitAnswers`` cut them, or when a C-CANCEL of the request arrived
   (``honour_cancel``, as for the other C-FINDs).

Any failure (a filter that fails, times out or returns something that is not a query; a query Orthanc
refuses; a missing folder or a worklist that is not DICOM) answers 0xC000. The filter runs in the main
Lua process, so one that hangs never holds C-STORE, whose filters run in the filter process.

pynetdicom takes one handler of ``EVT_C_FIND``: ``c_find_handler`` sends the worklist model here and
the query/retrieve models to ``broker.dicom.find_scp``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from pynetdicom import evt

from broker.core.elements import dataset_of
from broker.core.worklist_query import WorklistMatcher, fix_query, restricted_to_issuer
from broker.core.worklists import WorklistAnswers, WorklistFolder
from broker.dicom.find_scp import (
    MATCHING_TERMINATED,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
    FindScp,
    Response,
    honour_cancel,
)
from broker.dicom.negotiation import WORKLIST_SOP_CLASS
from broker.dicom.permissions import is_allowed
from broker.errors import OrthancError
from broker.scripting.filters import filtered_worklist_query

if TYPE_CHECKING:
    from broker.services import Services

log = logging.getLogger("luabroker.dicom")

FindHandler = Callable[[evt.Event], Iterator[Response]]


class WorklistScp:
    """The handler of ``EVT_C_FIND`` on the Modality Worklist model."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def handle_find(self, event: evt.Event) -> Iterator[Response]:
        assoc = event.assoc
        remote_aet, remote_ip = assoc.requestor.ae_title, assoc.requestor.address
        if not is_allowed(self.services.network, remote_aet, "allow_find_worklist",
                          always=self.services.config.dicom_always_allow_find_worklist, remote_ip=remote_ip):
            log.warning("Worklist C-FIND from AET %s on IP %s refused: not allowed by DicomModalities "
                        "(nor DicomAlwaysAllowFindWorklist); aborting the association", remote_aet, remote_ip)
            assoc.abort()
            yield UNABLE_TO_PROCESS, None
            return
        yield from honour_cancel(event, self.responses(event, remote_aet, remote_ip))

    def responses(self, event: evt.Event, remote_aet: str, remote_ip: str) -> Iterator[Response]:
        """Every response, the final one included; the query runs when the first is asked for."""
        try:
            found = self.find(event, remote_aet, remote_ip)
        except Exception as exc:  # every failure is Orthanc's status, never a dropped association
            (log.warning if isinstance(exc, OrthancError) else log.exception)(
                "Worklist C-FIND from %s failed with status 0x%04X: %s", remote_aet, UNABLE_TO_PROCESS, exc)
            yield UNABLE_TO_PROCESS, None
            return
        encoding = self.services.store.default_encoding
        for answer in found.answers:
            yield PENDING, dataset_of(answer, encoding, permissive=True)
        if not found.complete:
            log.warning("Too many results for an incoming worklist C-FIND query")
        yield (SUCCESS if found.complete else MATCHING_TERMINATED), None

    def find(self, event: evt.Event, remote_aet: str, remote_ip: str) -> WorklistAnswers:
        services, config = self.services, self.services.config
        settings, encoding = config.worklists, services.store.default_encoding
        assert settings.database is not None  # the model is accepted only when the worklists are enabled
        query = event.identifier
        fix_query(query)
        request = event.assoc.requestor.primitive
        called = str(request.called_ae_title).strip() if request else config.dicom_aet
        modalities = services.network.modalities_with_aet(remote_aet)
        filtered = filtered_worklist_query(services.scripts, query, remote_ip, remote_aet, called,
                                           modalities[0][1].manufacturer if modalities else "Generic", encoding)
        if filtered is not None:
            query = filtered
        answers = WorklistMatcher.of(query, config.case_sensitive_pn)
        matcher = answers
        if settings.filter_issuer_aet:
            matcher = WorklistMatcher.of(restricted_to_issuer(query, remote_aet, encoding), config.case_sensitive_pn)
        return WorklistFolder(settings.database).find(matcher, answers, settings.limit_answers)


def c_find_handler(services: Services) -> FindHandler:
    """The one handler of ``EVT_C_FIND``: worklist queries to ``WorklistScp``, the others to ``FindScp``
    (the worklist model is negotiated only when the worklists are enabled)."""
    find, worklists = FindScp(services).handle_find, WorklistScp(services).handle_find

    def handle_find(event: evt.Event) -> Iterator[Response]:
        return worklists(event) if str(event.context.abstract_syntax) == WORKLIST_SOP_CLASS else find(event)

    return handle_find
