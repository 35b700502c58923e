"""The remote ends the broker talks to (DICOM modalities, Orthanc peers) and the options for reaching them.

``DicomModalities`` and ``OrthancPeers`` are read in every form Orthanc accepts
(``RemoteModalityParameters`` and ``WebServiceParameters`` in Orthanc's framework):

- a modality is ``["AET", "host", port]``, ``["AET", "host", port, "Manufacturer"]`` or an object
  ``{"AET", "Host", "Port", "Manufacturer", "Allow…", "LocalAet", "Timeout", "UseDicomTls"}``;
  the port may be a number or a numeric string, in ``[1..65534]``;
- a peer is ``["url"]``, ``["url", "user", "password"]`` or an object ``{"Url" (or "URL"), "Username",
  "Password", "HttpHeaders", "Timeout", "Pkcs11", "CertificateFile", …}``; other keys of the object are
  user properties (strings, booleans, integers), as in Orthanc; a trailing ``/`` is added to the URL.

``Modality.parse`` and ``Peer.parse`` also read the bodies of ``PUT /modalities/{name}`` and
``PUT /peers/{name}``, so a bad entry raises ``OrthancError`` with Orthanc's code (``BadFileFormat`` or
``ParameterOutOfRange``) and message; in the configuration it becomes a ``ConfigError`` that names the
entry. The tables read here are the initial content of ``broker.network.NetworkRegistry``, which REST
changes at run time.

How a caller is matched with its modalities, and whether it must call ``DicomAet``:
``StrictAetComparison``, ``DicomCheckModalityHost`` and ``DicomCheckCalledAet`` (``NetworkOptions``,
applied by ``broker.network`` and ``broker.dicom.permissions``).

The options of the clients: ``DicomAssociationCloseDelay``, ``DicomScuTimeout`` and
``TranscodeDicomProtocol`` (``DicomOptions``),
``HttpTimeout``, ``HttpProxy``, ``HttpsVerifyPeers``, ``HttpsCACertificates`` and
``LuaHttpAllowedHosts`` (``HttpOptions``, shared by the peer client and the Lua ``Http*`` built-ins).
"""
from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from broker.config.options import ConfigError, Section, bad_value
from broker.errors import ErrorCode, OrthancError
from broker.json_fields import read_boolean, read_string, read_unsigned

T = TypeVar("T")

# Orthanc's manufacturers (1.10): the current names, and the obsolete ones it still accepts.
MANUFACTURERS = ("Generic", "GenericNoWildcardInDates", "GenericNoUniversalWildcard", "Vitrea", "GE")
OBSOLETE_MANUFACTURERS = {
    "ClearCanvas": "Generic", "MedInria": "Generic", "Dcm4Chee": "Generic", "EFilm2": "Generic",
    "SyngoVia": "GenericNoWildcardInDates", "AgfaImpax": "GenericNoWildcardInDates",
}

# Object keys of a modality, in the order of Orthanc's JSON, with their attribute names.
_ALLOW_KEYS = {
    "AllowEcho": "allow_echo", "AllowEventReport": "allow_event_report", "AllowFind": "allow_find",
    "AllowFindWorklist": "allow_find_worklist", "AllowGet": "allow_get", "AllowMove": "allow_move",
    "AllowNAction": "allow_n_action", "AllowStore": "allow_store", "AllowTranscoding": "allow_transcoding",
}
_PEER_RESERVED_KEYS = {"CertificateFile", "CertificateKeyFile", "CertificateKeyPassword", "HttpHeaders",
                       "Password", "Pkcs11", "Url", "URL", "Username", "Timeout"}


def _bad_format(details: str = "") -> OrthancError:
    return OrthancError(ErrorCode.BAD_FILE_FORMAT, details)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_port(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _bad_format() from None
    elif not _is_int(value):
        raise _bad_format()
    if not 0 < value < 65535:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           f"A TCP port number must be in range [1..65534], but found: {value}")
    return value


def _read_manufacturer(value: str) -> str:
    if value in MANUFACTURERS:
        return value
    if value in OBSOLETE_MANUFACTURERS:
        return OBSOLETE_MANUFACTURERS[value]
    raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f'Unknown modality manufacturer: "{value}"')


@dataclass(frozen=True)
class Modality:
    """One entry of ``DicomModalities`` (Orthanc's ``RemoteModalityParameters``)."""

    aet: str
    host: str
    port: int
    manufacturer: str = "Generic"
    allow_echo: bool = True
    allow_event_report: bool = True
    allow_find: bool = True
    allow_find_worklist: bool = True
    allow_get: bool = True
    allow_move: bool = True
    allow_n_action: bool = True
    allow_store: bool = True
    allow_transcoding: bool = True
    use_dicom_tls: bool = False
    #: The calling AET to use with this modality when none is given (``""``: the server's ``DicomAet``).
    local_aet: str = ""
    #: DICOM timeout in seconds for this modality; 0 means ``DicomScuTimeout``.
    timeout: int = 0

    @classmethod
    def parse(cls, value: Any) -> Modality:
        """Any of Orthanc's forms; raises ``OrthancError`` as Orthanc does for a bad one."""
        if isinstance(value, list):
            if (len(value) not in (3, 4) or not isinstance(value[0], str) or not isinstance(value[1], str)
                    or (len(value) == 4 and not isinstance(value[3], str))):
                raise _bad_format()
            manufacturer = _read_manufacturer(value[3]) if len(value) == 4 else "Generic"
            return cls(aet=value[0], host=value[1], port=_read_port(value[2]), manufacturer=manufacturer)
        if not isinstance(value, dict):
            raise _bad_format()
        aet, host = read_string(value, "AET"), read_string(value, "Host")
        if "Port" not in value:
            raise _bad_format()
        options: dict[str, Any] = {"aet": aet, "host": host, "port": _read_port(value["Port"])}
        if "Manufacturer" in value:
            options["manufacturer"] = _read_manufacturer(read_string(value, "Manufacturer"))
        for key, attribute in _ALLOW_KEYS.items():
            if key in value:
                options[attribute] = read_boolean(value, key)
        if "AllowStorageCommitment" in value:  # sets both storage-commitment permissions
            options["allow_n_action"] = options["allow_event_report"] = read_boolean(value, "AllowStorageCommitment")
        if "UseDicomTls" in value:
            options["use_dicom_tls"] = read_boolean(value, "UseDicomTls")
        if "LocalAet" in value:
            options["local_aet"] = read_string(value, "LocalAet")
        if "Timeout" in value:
            options["timeout"] = read_unsigned(value, "Timeout")
        return cls(**options)

    def to_json(self) -> dict[str, Any]:
        """Orthanc's advanced format, as ``GET /modalities/{name}/configuration`` answers it."""
        answer: dict[str, Any] = {"AET": self.aet}
        answer.update({key: getattr(self, attribute) for key, attribute in _ALLOW_KEYS.items()})
        answer.update({"Host": self.host, "LocalAet": self.local_aet, "Manufacturer": self.manufacturer,
                       "Port": self.port, "Timeout": self.timeout, "UseDicomTls": self.use_dicom_tls})
        return answer


def _normalise_url(url: str) -> str:
    if "://" in url and not url.startswith(("http://", "https://")):
        raise _bad_format(f"Bad URL: {url}")
    if not url:
        raise _bad_format("Empty URL")
    return url if url.endswith("/") else url + "/"


def _peer_string(obj: Mapping[str, Any], key: str) -> str:
    if key not in obj:
        return ""
    if not isinstance(obj[key], str):
        raise _bad_format()
    return obj[key]


@dataclass(frozen=True)
class Peer:
    """One entry of ``OrthancPeers`` (Orthanc's ``WebServiceParameters``)."""

    url: str
    username: str = ""
    password: str = ""
    #: Extra HTTP headers sent with every request to the peer, as (name, value), sorted by name.
    http_headers: tuple[tuple[str, str], ...] = ()
    #: HTTP timeout in seconds for this peer; 0 means ``HttpTimeout``.
    timeout: int = 0
    pkcs11: bool = False
    certificate_file: str = ""
    certificate_key_file: str = ""
    certificate_key_password: str = ""
    user_properties: tuple[tuple[str, str], ...] = ()

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.http_headers)

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic credentials, sent only when both parts are set (as Orthanc's ``HttpClient``)."""
        return (self.username, self.password) if self.username and self.password else None

    @classmethod
    def parse(cls, value: Any) -> Peer:
        if isinstance(value, list):
            if len(value) not in (1, 3) or not all(isinstance(v, str) for v in value):
                raise _bad_format()
            url = _normalise_url(value[0])
            if len(value) == 1:
                return cls(url=url)
            username, password = value[1], value[2]
            if not username and password:
                raise _bad_format()
            return cls(url=url, username=username, password=password)
        if not isinstance(value, dict):
            raise _bad_format()
        url = _peer_string(value, "Url") or _peer_string(value, "URL")
        username, password = _peer_string(value, "Username"), _peer_string(value, "Password")
        if not username and password:
            raise _bad_format()
        options: dict[str, Any] = {"url": _normalise_url(url), "username": username, "password": password}
        certificate = _peer_string(value, "CertificateFile")
        if certificate:
            options.update(certificate_file=certificate,
                           certificate_key_file=_peer_string(value, "CertificateKeyFile"),
                           certificate_key_password=_peer_string(value, "CertificateKeyPassword"))
        if "Pkcs11" in value:
            if not isinstance(value["Pkcs11"], bool):
                raise _bad_format()
            options["pkcs11"] = value["Pkcs11"]
        headers = value.get("HttpHeaders", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise _bad_format()
        options["http_headers"] = tuple(sorted(headers.items()))
        properties = []
        for key, item in value.items():
            if key in _PEER_RESERVED_KEYS:
                continue
            if isinstance(item, bool):
                item = "1" if item else "0"
            elif _is_int(item):
                item = str(item)
            elif not isinstance(item, str):
                raise _bad_format(f"User-defined properties associated with a Web service must be strings: {key}")
            properties.append((key, item))
        options["user_properties"] = tuple(sorted(properties))
        if "Timeout" in value:
            options["timeout"] = read_unsigned(value, "Timeout")
        return cls(**options)

    def public_json(self) -> dict[str, Any]:
        """What ``GET /peers?expand`` shows (Orthanc's ``FormatPublic``): no password, no header value."""
        answer: dict[str, Any] = {"Url": self.url}
        if self.username:
            answer["Username"] = self.username
            answer["Password"] = None
        if self.certificate_file:
            answer.update(CertificateFile=self.certificate_file, CertificateKeyFile=None,
                          CertificateKeyPassword=None)
        answer.update(Pkcs11=self.pkcs11, Timeout=self.timeout, HttpHeaders=[name for name, _ in self.http_headers])
        answer.update(self.user_properties)
        return answer


def _table(options: Section, name: str, parse: Callable[[Any], T]) -> dict[str, T]:
    """``DicomModalities`` or ``OrthancPeers``: symbolic name → entry; a bad entry is named."""
    table = options.get(name, {})
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise bad_value(name, table, "an object of symbolic names")
    entries = {}
    for key, value in table.items():
        try:
            entries[key] = parse(value)
        except OrthancError as exc:
            raise ConfigError(f"Option '{name}' has a bad entry {key!r} ({value!r}): "
                              f"{exc.details or exc.message}") from exc
    return entries


@dataclass(frozen=True)
class DicomOptions:
    """The options of the DICOM client (C-STORE, C-ECHO and C-FIND SCU)."""

    #: Calling AET when none is given and the modality has no ``LocalAet`` (``DicomAet``).
    default_aet: str = "ORTHANC"
    #: Idle seconds before an association opened for C-STORE is released; 0 releases it at once.
    association_close_delay: float = 5.0
    #: Seconds allowed for connecting, association negotiation and each DIMSE answer; 0 = no limit.
    scu_timeout: float = 10.0
    #: ``QueryRetrieveSize``: how many C-FIND SCU queries (``/queries``) are kept, the least recently
    #: used one dropped first.
    query_retrieve_size: int = 100
    #: ``DicomEchoChecksFind``: whether ``/echo`` also sends a C-FIND when the body does not say.
    echo_checks_find: bool = False
    #: ``TranscodeDicomProtocol``: an instance a receiver does not accept in its stored syntax may be
    #: transcoded (C-STORE SCU, C-MOVE, C-GET), if its modality's ``AllowTranscoding`` lets it too.
    transcode: bool = True


@dataclass(frozen=True)
class HttpOptions:
    """Orthanc's options for outgoing HTTP (peers and the Lua ``Http*`` built-ins)."""

    #: Default timeout in seconds of one request; <= 0 means 60 (as Orthanc's ``HttpClient``).
    timeout: float = 60
    proxy: str = ""
    verify_peers: bool = True
    #: A PEM file of trusted CAs; empty means the system's store.
    ca_certificates: str = ""
    #: ``LuaHttpAllowedHosts``: host patterns the Lua ``Http*`` built-ins may call; None means any host.
    lua_allowed_hosts: tuple[str, ...] | None = None

    def effective_timeout(self, seconds: float | None = None) -> float:
        """``seconds`` (or the default), with Orthanc's rule that <= 0 means 60."""
        value = self.timeout if seconds is None else seconds
        return value if value > 0 else 60

    def proxy_url(self) -> str | None:
        if not self.proxy:
            return None
        return self.proxy if "://" in self.proxy else "http://" + self.proxy

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What ``httpx`` gets as ``verify``: the system's CAs (as Orthanc's native CA store), the CA
        file of ``HttpsCACertificates``, or False when ``HttpsVerifyPeers`` is off."""
        if not self.verify_peers:
            return False
        return ssl.create_default_context(cafile=self.ca_certificates or None)


@dataclass(frozen=True)
class NetworkOptions:
    """The remote ends and how to reach them."""

    #: ``DicomModalities`` as configured (``PUT``/``DELETE /modalities`` change the running registry).
    modalities: Mapping[str, Modality] = field(default_factory=dict)
    #: ``OrthancPeers`` as configured (``PUT``/``DELETE /peers`` change the running registry).
    peers: Mapping[str, Peer] = field(default_factory=dict)
    dicom: DicomOptions = field(default_factory=DicomOptions)
    http: HttpOptions = field(default_factory=HttpOptions)
    #: ``StrictAetComparison``: AETs are compared with their case (``broker.network``).
    strict_aet_comparison: bool = False
    #: ``DicomCheckModalityHost``: a caller must also come from its modality's ``Host``
    #: (``broker.dicom.permissions``).
    check_modality_host: bool = False
    #: ``DicomCheckCalledAet``: an association must call ``DicomAet`` (``broker.dicom.permissions``).
    check_called_aet: bool = False


def read_network_options(options: Section, base_dir: Path, local_aet: str) -> NetworkOptions:
    """The tables and the clients' options; ``local_aet`` is ``DicomAet``, relative paths are relative
    to ``base_dir``."""
    ca = _text(options, "HttpsCACertificates")
    if ca and not Path(ca).is_absolute():
        ca = str(base_dir / ca)
    hosts = options.get("LuaHttpAllowedHosts")
    if hosts is not None and (not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts)):
        raise bad_value("LuaHttpAllowedHosts", hosts, "a list of host names or patterns (such as \"*.example.org\")")
    at_least_0 = (lambda v: v >= 0), ">= 0"
    return NetworkOptions(
        modalities=_table(options, "DicomModalities", Modality.parse),
        peers=_table(options, "OrthancPeers", Peer.parse),
        dicom=DicomOptions(default_aet=local_aet,
                           association_close_delay=options.option("DicomAssociationCloseDelay", float, 5.0,
                                                                  *at_least_0),
                           scu_timeout=options.option("DicomScuTimeout", float, 10.0, *at_least_0),
                           query_retrieve_size=options.option("QueryRetrieveSize", int, 100,
                                                              lambda v: v >= 1, ">= 1"),
                           echo_checks_find=options.option("DicomEchoChecksFind", bool, False),
                           transcode=options.option("TranscodeDicomProtocol", bool, True)),
        http=HttpOptions(timeout=options.option("HttpTimeout", float, 60.0),
                         proxy=_text(options, "HttpProxy"),
                         verify_peers=options.option("HttpsVerifyPeers", bool, True),
                         ca_certificates=ca,
                         lua_allowed_hosts=None if hosts is None else tuple(h.lower() for h in hosts)),
        strict_aet_comparison=options.option("StrictAetComparison", bool, False),
        check_modality_host=options.option("DicomCheckModalityHost", bool, False),
        check_called_aet=options.option("DicomCheckCalledAet", bool, False),
    )


def _text(options: Section, name: str) -> str:
    """A string option whose absence (or ``null``) is the empty string."""
    return options.option(name, str, "") if options.get(name) is not None else ""
