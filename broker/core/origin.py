"""Where a request or an instance comes from (Orthanc's ``origin`` table)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class RequestOrigin(str, enum.Enum):
    REST_API = "RestApi"
    DICOM_PROTOCOL = "DicomProtocol"
    LUA = "Lua"
    PLUGINS = "Plugins"


@dataclass(frozen=True)
class Origin:
    """Who sent a request: an HTTP client, a DICOM peer, or a Lua script.

    ``to_lua()`` is the one place that builds the ``origin`` table given to ``ReceivedInstanceFilter``
    and ``OnStoredInstance``: the keys depend on the origin, as in Orthanc (spec section 2).
    """

    request_origin: RequestOrigin
    remote_ip: str = ""
    remote_aet: str = ""
    called_aet: str = ""
    username: str = ""

    @classmethod
    def lua(cls) -> Origin:
        return _LUA

    @classmethod
    def rest(cls, remote_ip: str, username: str = "") -> Origin:
        return cls(RequestOrigin.REST_API, remote_ip=remote_ip, username=username)

    @classmethod
    def dicom(cls, remote_ip: str, remote_aet: str, called_aet: str) -> Origin:
        return cls(RequestOrigin.DICOM_PROTOCOL, remote_ip=remote_ip, remote_aet=remote_aet, called_aet=called_aet)

    def to_lua(self) -> dict[str, Any]:
        table: dict[str, Any] = {"RequestOrigin": self.request_origin.value}
        if self.request_origin is RequestOrigin.DICOM_PROTOCOL:
            table.update(RemoteIp=self.remote_ip, RemoteAet=self.remote_aet, CalledAet=self.called_aet)
        elif self.request_origin is RequestOrigin.REST_API:
            table.update(RemoteIp=self.remote_ip, Username=self.username)
        return table

    def to_dict(self) -> dict[str, str]:
        """Every field, for persisting the origin in the outbox."""
        return {"RequestOrigin": self.request_origin.value, "RemoteIp": self.remote_ip,
                "RemoteAet": self.remote_aet, "CalledAet": self.called_aet, "Username": self.username}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Origin:
        return cls(RequestOrigin(data["RequestOrigin"]), data.get("RemoteIp", ""), data.get("RemoteAet", ""),
                   data.get("CalledAet", ""), data.get("Username", ""))


#: Every call of a script has the same origin (an immutable value: one is enough).
_LUA = Origin(RequestOrigin.LUA, remote_ip="127.0.0.1")
