"""Association slots: how many associations the DICOM server serves at once.

pynetdicom counts every accepted connection against ``maximum_associations``, including those that
never send an association request: 40 idle connections took every slot and a real C-ECHO was refused
until they timed out (issue 7, finding 4). Here a slot is taken when the A-ASSOCIATE-RQ arrives
(``EVT_REQUESTED``, before negotiation): a connection that sends nothing holds no slot, and is closed
after ``DicomScpAcseTimeout``. pynetdicom's own count is turned off (``UNCOUNTED``).
"""
from __future__ import annotations

import logging
import sys
import threading

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType

log = logging.getLogger("luabroker.dicom")

#: ``AE.maximum_associations`` of the server: pynetdicom's count never refuses; ``AssociationSlots`` does.
UNCOUNTED = sys.maxsize
# A-ASSOCIATE-RJ: rejected transient, by the service provider (presentation), local limit exceeded.
_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


class AssociationSlots:
    """At most ``maximum`` associations that asked for one and have not ended, counted over the
    association threads themselves, so that no bookkeeping can leak a slot."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._lock = threading.Lock()

    @property
    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_REQUESTED, self.on_requested)]

    def on_requested(self, event: evt.Event) -> None:
        """Refuse the association (as pynetdicom would, with "local limit exceeded") when every slot is
        taken; pynetdicom then skips negotiation and closes the connection."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # the A-ASSOCIATE-RQ this event is about
        with self._lock:
            busy = sum(1 for other in assoc.ae.active_associations if other is not assoc and _holds_slot(other))
            if busy < self.maximum:
                return
            log.warning("Association from %s at %s refused: %d associations already (DicomScpMaximumAssociations)",
                        request.calling_ae_title, assoc.requestor.address, busy)
            assoc.acse.send_reject(*_LOCAL_LIMIT_EXCEEDED)
        assoc.kill()


def _holds_slot(assoc: Association) -> bool:
    """An incoming association that asked (A-ASSOCIATE-RQ received) and has not ended."""
    return (assoc.is_acceptor and assoc.requestor.primitive is not None
            and not (assoc.is_rejected or assoc.is_aborted or assoc.is_released))
