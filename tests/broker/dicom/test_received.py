"""What the C-STORE SCP spares each association (``broker.dicom.received.lighten``): the response
encoded from bytes, the same as pynetdicom's, and its DIMSE log lines only when they would be printed."""
from __future__ import annotations

import logging

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from broker.dicom.received import store_response_command
from tests.support.factory import make_instances


def response(status: int, sop_instance: str) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = 7  # the SCP copies it from the request; a response does not carry it
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Status = status
    return primitive


@pytest.mark.parametrize(("status", "sop_instance"), [(0x0000, "1.2.3.4"), (0xA700, "1.2.3.45"), (0xC000, "1.2.3"),
                                                      (0xB000, "1.2." + "9" * 60)])
def test_a_store_response_is_encoded_as_pynetdicom_encodes_it(status: int, sop_instance: str) -> None:
    message = C_STORE_RSP()
    message.primitive_to_message(response(status, sop_instance))
    (pdata,) = list(message.encode_msg(1, 16384))
    assert pdata.presentation_data_value_list == [(1, b"\x03" + (store_response_command(response(status, sop_instance))
                                                                 or b""))]


def test_other_messages_are_left_to_pynetdicom() -> None:
    with_comment = response(0xA700, "1.2.3")
    with_comment.ErrorComment = "Out of resources"
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    request.AffectedSOPInstanceUID = "1.2.3"
    assert store_response_command(with_comment) is None
    assert store_response_command(request) is None


@pytest.mark.parametrize("level", [logging.WARNING, logging.INFO])
def test_dimse_messages_are_logged_only_when_printed(luabroker, caplog, level: int) -> None:
    server = luabroker()
    logger = logging.getLogger("pynetdicom")
    before = logger.level
    logger.setLevel(level)
    try:
        with caplog.at_level(level, logger="pynetdicom"):
            assert server.c_store(make_instances(2)) == [0, 0]
    finally:
        logger.setLevel(before)
    logged = [record for record in caplog.records if record.getMessage() == "Received Store Request"]
    assert len(logged) == (2 if level == logging.INFO else 0)
