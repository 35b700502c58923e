"""The settings that the REST API changes while the server runs, and that every worker must apply:
the transfer syntaxes and unknown SOP classes the DICOM server accepts
(``/tools/accepted-transfer-syntaxes``, ``/tools/unknown-sop-class-accepted``), the default encoding
(``/tools/default-encoding``), the modalities and peers (``PUT``/``DELETE /modalities/{name}``, which
decide who may query and where a C-MOVE goes, and ``/peers/{name}``) and the log levels
(``/tools/log-level*``).

The worker that changes one (the coordinator, which serves HTTP) pushes them to every other worker and
waits for each to have applied them (``Siblings.share_settings``), so the next association, whichever
worker takes it, sees the change. It also writes them to ``runtime-settings.json`` in the storage
directory, which a worker started later (after a crash) applies at its start. The supervisor deletes
that file when it starts: as in Orthanc, these changes last until the server stops.

With the index in PostgreSQL they are the cluster's: the coordinator writes them in the
``runtime_settings`` row of the tenant's schema and notifies every worker of every node, which applies
them at once (``broker.workers.siblings.cluster_listener``); a node started later applies them at its
start. They stay in the database while the cluster runs on (no node can tell that it is the last), as
Orthanc keeps the modalities and peers changed over REST with ``DicomModalitiesInDatabase`` and
``OrthancPeersInDatabase``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from broker.config import Config
from broker.config.network import Modality, Peer
from broker.config.postgresql import tenant_schema
from broker.core.cluster import channel
from broker.core.encodings import encoding_named
from broker.rest.tools import LOG_CATEGORIES
from broker.services import Services

FILE_NAME = "runtime-settings.json"
#: The payload of the notification that the cluster's settings changed (``broker.workers.siblings``).
SETTINGS_CHANGED = "settings"


def current(services: Services) -> dict[str, Any]:
    contexts, network = services.dicom_contexts, services.network
    return {"AcceptedTransferSyntaxes": list(contexts.transfer_syntaxes),
            "UnknownSopClassAccepted": contexts.unknown_sop_class_accepted,
            "DefaultEncoding": services.store.default_encoding.name,
            "DicomModalities": {name: modality.to_json() for name, modality in network.modalities().items()},
            # Whole, passwords included (``public_json`` hides them): the file is the owner's only.
            "OrthancPeers": {name: dataclasses.asdict(peer) for name, peer in network.peers().items()},
            "LogLevels": {name: logging.getLogger(name).level
                          for names in LOG_CATEGORIES.values() for name in names}}


def apply(services: Services, settings: dict[str, Any]) -> None:
    services.dicom_contexts.transfer_syntaxes = tuple(settings["AcceptedTransferSyntaxes"])
    services.dicom_contexts.unknown_sop_class_accepted = bool(settings["UnknownSopClassAccepted"])
    services.store.default_encoding = encoding_named(settings["DefaultEncoding"])
    services.network.replace({name: Modality.parse(value) for name, value in settings["DicomModalities"].items()},
                             {name: _peer(value) for name, value in settings["OrthancPeers"].items()})
    for name, level in settings["LogLevels"].items():
        logging.getLogger(name).setLevel(int(level))


def _peer(value: dict[str, Any]) -> Peer:
    """A peer back from ``dataclasses.asdict`` through JSON (whose pairs came back as lists)."""
    return Peer(**{**value, "http_headers": tuple(map(tuple, value["http_headers"])),
                   "user_properties": tuple(map(tuple, value["user_properties"]))})


def notify_cluster(tx: Any, services: Services, payload: str) -> None:
    """On PostgreSQL, in the write transaction ``tx`` (delivered at its commit): tell every worker of every
    node, on the tenant's ``control`` channel (``broker.workers.siblings.cluster_listener``)."""
    tx.connection.execute("SELECT pg_notify(?, ?)", (channel(tenant_schema(services.scripts.tenant), "control"),
                                                      payload))


def save(services: Services, settings: dict[str, Any]) -> None:
    """Keep the settings for a worker started later. On SQLite: write the file whole, then rename it into
    place (a worker never reads half of it). On PostgreSQL: the cluster's row, and a notification that
    has every worker of every node apply them (``broker.workers.siblings.cluster_listener``)."""
    if services.config.postgresql.enable_index:
        with services.store.index.write() as tx:
            tx.connection.execute("INSERT INTO runtime_settings (id, settings) VALUES (1, ?) ON CONFLICT (id) "
                                  "DO UPDATE SET settings = excluded.settings", (json.dumps(settings),))
            notify_cluster(tx, services, SETTINGS_CHANGED)
        return
    path = services.config.storage_directory / FILE_NAME
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        json.dump(settings, file)
    temporary.replace(path)


def load(services: Services) -> dict[str, Any] | None:
    """The settings changed since the server (the cluster) started; None if none was."""
    if services.config.postgresql.enable_index:
        with services.store.index.read() as tx:
            row = tx.connection.execute("SELECT settings FROM runtime_settings WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None
    try:
        settings: dict[str, Any] = json.loads((services.config.storage_directory / FILE_NAME).read_text())
    except FileNotFoundError:
        return None
    return settings


def forget(config: Config) -> None:
    """At the start of a server: the changes of the last run end with it. Not on PostgreSQL, where the
    other nodes of the cluster may run on with them."""
    if not config.postgresql.enable_index:
        (config.storage_directory / FILE_NAME).unlink(missing_ok=True)
