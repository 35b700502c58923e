"""The runtime settings that a worker process pushes to the others (``broker.workers.settings``): what
``current`` reads comes back whole through JSON and ``apply``, passwords and headers of peers included."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

from broker.config import Config
from broker.workers import settings


def test_the_settings_come_back_whole_through_json(luabroker: Any) -> None:
    server = luabroker()
    http, services = server.http, server.server.services
    assert http.put("/peers/remote", json={"Url": "http://peer:8042", "Username": "alice", "Password": "secret",
                                           "HttpHeaders": {"Token": "t"}, "Site": "north"}).is_success
    assert http.put("/modalities/pacs", json={"AET": "PACS", "Host": "10.0.0.1", "Port": 104,
                                              "AllowMove": False}).is_success
    assert http.put("/tools/accepted-transfer-syntaxes", json=["1.2.840.10008.1.2"]).is_success
    assert http.put("/tools/default-encoding", content="Utf8").is_success
    assert http.put("/tools/log-level-dicom", content="verbose").is_success
    try:
        saved = json.loads(json.dumps(settings.current(services)))
        # What another worker had before the change: the configuration's values.
        services.network.replace({}, {})
        services.dicom_contexts.transfer_syntaxes = ("1.2.840.10008.1.2.1",)
        logging.getLogger("luabroker.dicom").setLevel(logging.WARNING)
        settings.apply(services, saved)
        assert json.loads(json.dumps(settings.current(services))) == saved
        peer = services.network.peer("remote")
        assert (peer.password, peer.headers, peer.user_properties) == ("secret", {"Token": "t"}, (("Site", "north"),))
        assert not services.network.modality("pacs").allow_move
        assert services.dicom_contexts.transfer_syntaxes == ("1.2.840.10008.1.2",)
        assert services.store.default_encoding.name == "Utf8"
        assert logging.getLogger("luabroker.dicom").level == logging.INFO
    finally:
        http.put("/tools/log-level", content="default")


def test_the_file_is_the_owners_only_and_forgotten_at_the_next_start(tmp_path: Any) -> None:
    services = SimpleNamespace(config=Config(storage_directory=tmp_path))
    settings.save(services, {"DefaultEncoding": "Utf8"})  # type: ignore[arg-type]
    assert (tmp_path / settings.FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert settings.load(services) == {"DefaultEncoding": "Utf8"}  # type: ignore[arg-type]
    settings.forget(services.config)
    assert settings.load(services) is None  # type: ignore[arg-type]
