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

from broker.core.cfind import FindAnswers
from broker.core.worklist_query import WorklistMatcher, fix_query, restricted_to_issuer
from broker.core.worklists import WorklistFolder
from broker.dicom.find_scp import FindScp, Response
from broker.dicom.negotiation import WORKLIST_SOP_CLASS
from broker.scripting.filters import filtered_worklist_query

if TYPE_CHECKING:
    from broker.services import Services

log = logging.getLogger("luabroker.dicom")

FindHandler = Callable[[evt.Event], Iterator[Response]]


class WorklistScp(FindScp):
    """The handler of ``EVT_C_FIND`` on the Modality Worklist model."""

    permission, always_option, always_name, label = ("allow_find_worklist", "dicom_always_allow_find_worklist",
                                                      "DicomAlwaysAllowFindWorklist", "Worklist C-FIND")

    def find(self, event: evt.Event, remote_aet: str, remote_ip: str) -> FindAnswers:
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
