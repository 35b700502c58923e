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
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from broker.config import Config
from broker.config.network import Modality, Peer
from broker.core.encodings import encoding_named
from broker.core.lease import safe_file_name
from broker.rest.tools import LOG_CATEGORIES
from broker.services import Services

FILE_NAME = "runtime-settings.json"


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


def file_path(config: Config) -> Path:
    """The file of a server's (with PostgreSQL: of a node's) runtime settings."""
    if config.postgresql.enable_index:  # the nodes share the storage area; each has its settings
        return config.storage_directory / f"runtime-settings-{safe_file_name(config.node_name)}.json"
    return config.storage_directory / FILE_NAME


def save(config: Config, settings: dict[str, Any]) -> None:
    """Write the file whole, then rename it into place: a worker never reads half of it."""
    path = file_path(config)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        json.dump(settings, file)
    temporary.replace(path)


def load(config: Config) -> dict[str, Any] | None:
    try:
        settings: dict[str, Any] = json.loads(file_path(config).read_text())
    except FileNotFoundError:
        return None
    return settings


def forget(config: Config) -> None:
    file_path(config).unlink(missing_ok=True)
