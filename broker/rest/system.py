"""REST endpoints about the server: ``/system``, ``/statistics``, ``/tools/generate-uid``.

Handlers need ``services.store`` and ``services.config`` with ``name``, ``dicom_aet``, ``dicom_port``,
``http_port``, ``check_revisions`` and ``ssl_enabled``.
"""
from __future__ import annotations

import uuid
from typing import Any

from pydicom.uid import generate_uid

from broker import __version__
from broker.errors import BareHttpStatus
from broker.rest.router import RouteTable
from broker.rest.types import RestRequest, RestResponse
from broker.services import Services

routes = RouteTable()

#: The Orthanc release whose REST API luabroker answers like, and that API's version. ``Version`` says
#: the release, because clients enable features by comparing it with theirs (pyorthanc, Orthanc's own
#: integration suite: "1.9", "1.10"); luabroker's own version is ``LuabrokerVersion``.
ORTHANC_VERSION = "1.10.1"
API_VERSION = 16
DATABASE_VERSION = 6
MEGA_BYTES = 1024 * 1024


@routes.get("/system", inline=True)
def get_system(request: RestRequest, services: Services) -> dict[str, Any]:
    config = services.config
    return {
        "ApiVersion": API_VERSION,
        "CheckRevisions": config.check_revisions,
        "DatabaseBackendPlugin": None,
        "DatabaseVersion": DATABASE_VERSION,
        "DicomAet": config.dicom_aet,
        "DicomPort": config.dicom_port,
        "HttpPort": config.http_port,
        "IsHttpServerSecure": config.ssl_enabled,
        "Name": config.name,
        "PluginsEnabled": False,
        "StorageAreaPlugin": None,
        "Version": ORTHANC_VERSION,
        "LuabrokerVersion": __version__,
    }


@routes.get("/statistics")
def get_statistics(request: RestRequest, services: Services) -> dict[str, Any]:
    stats = services.store.statistics()
    return {
        "CountInstances": stats.count_instances,
        "CountPatients": stats.count_patients,
        "CountSeries": stats.count_series,
        "CountStudies": stats.count_studies,
        "TotalDiskSize": str(stats.disk_size),
        "TotalDiskSizeMB": stats.disk_size // MEGA_BYTES,
        "TotalUncompressedSize": str(stats.uncompressed_size),
        "TotalUncompressedSizeMB": stats.uncompressed_size // MEGA_BYTES,
    }


@routes.get("/tools/generate-uid")
def generate_uid_for_level(request: RestRequest, services: Services) -> RestResponse:
    """A new UID: a UUID for a patient (as Orthanc), a DICOM UID for the other levels."""
    level = request.query.get("level", "").lower()
    if level == "patient":
        return RestResponse.text(str(uuid.uuid4()))
    if level in ("study", "series", "instance"):
        return RestResponse.text(generate_uid())
    raise BareHttpStatus(404, 'Argument "level" must be patient, study, series or instance')
