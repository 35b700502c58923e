"""Orthanc's JSON configuration, read once and validated into typed, frozen settings.

The file is Orthanc's: comments are allowed, unknown options are kept (in ``raw``, which is also what
``GetOrthancConfiguration()`` returns) and ignored. Every option is read here and nowhere else, by
``Section.option`` (``broker.config.options``), so a bad value always stops start-up with the same
sentence: ``Option 'Jobs.RetryAttempts' has value 0; expected an integer >= 1``. Our own options have
Orthanc-style names and are documented in ``docs/configuration.md``.

One module per section; each has its frozen value types and the function that reads them:

- ``options``: ``ConfigError`` and the one reader of an option;
- ``files``: the files (comments, a directory merged in name order);
- ``scripts``: ``ScriptOptions``, what a script set runs with (``LuaScripts``, ``LuaSandbox``, ...);
- ``network``: ``DicomModalities``, ``OrthancPeers`` and the DICOM and HTTP clients' options;
- ``jobs``: the jobs engine (``ConcurrentJobs``, ``SaveJobs``, the ``Jobs`` section);
- ``worklists``: the modality worklist server (the ``Worklists`` section);
- this module: ``Config``, the server's own options and the sections put together.

- ``tenants``: the ``Tenants`` section; each tenant runs with a ``Config`` of its own, the server's
  options with the tenant's object laid over them;
- ``postgresql``: the ``PostgreSQL`` section (the index in PostgreSQL).
- ``object_storage``: the ``AwsS3Storage`` section (the files in S3-compatible object storage).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from broker.config.files import read_options
from broker.config.jobs import JobsSettings, read_jobs_settings
from broker.config.network import NetworkOptions, read_network_options
from broker.config.object_storage import ObjectStorageSettings, read_object_storage
from broker.config.options import ConfigError, Section, bad_value
from broker.config.postgresql import PostgresSettings, read_postgresql
from broker.config.scripts import ScriptOptions, read_interpreter, read_script_options
from broker.config.tenants import DEFAULT_TENANT, TenantConfig, read_tenants
from broker.config.worklists import WorklistsSettings, read_worklists
from broker.core.bounds import MIB, InflateBound, InputBounds
from broker.core.encodings import ENCODINGS, LATIN1, Encoding, find_encoding
from broker.core.recycling import StorageLimits
from broker.core.transfer_syntaxes import ALL_PATTERN, ORTHANC_TRANSFER_SYNTAXES, matching_transfer_syntaxes

__all__ = ["Config", "ConfigError"]


@dataclass(frozen=True)
class Config(ScriptOptions):
    """The whole configuration: the server's options, and (inherited) those of its script set."""

    raw: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)
    name: str = "luabroker"
    http_port: int = 8042
    http_bind: str = "0.0.0.0"
    dicom_port: int = 4242
    dicom_aet: str = "ORTHANC"
    dicom_server_enabled: bool = True
    #: ``Workers``: how many processes serve DICOM and HTTP (docs/workers.md); 1 is one process, as
    #: Orthanc. A configuration file without it gets one per core.
    workers: int = 1
    #: Set by ``broker.server.Server`` for a server that is one process holding the coordinator role
    #: from its start (tests, ``Workers: 1`` on SQLite); see ``supervised``.
    single_process: bool = False
    storage_directory: Path = Path("luabroker-data")
    execute_lua_enabled: bool = False
    #: ``RestApiWriteToFileSystemEnabled`` (Orthanc 1.12): ``POST /instances/{id}/export`` writes files
    #: where the server may; off, it answers 403.
    rest_api_write_to_file_system_enabled: bool = False
    remote_access_allowed: bool = False
    authentication_enabled: bool = False
    registered_users: dict[str, str] = field(default_factory=dict)
    http_describe_errors: bool = True
    #: ``SslEnabled``: answered by ``/system`` (``IsHttpServerSecure``); luabroker serves plain HTTP.
    ssl_enabled: bool = False
    #: ``CheckRevisions``: answered by ``/system``.
    check_revisions: bool = False
    #: ``MetricsEnabled``: false makes ``/tools/metrics-prometheus`` answer an empty text.
    metrics_enabled: bool = True
    user_metadata: dict[str, int] = field(default_factory=dict)
    lua_interpreter: str | None = None
    #: ``LuaAdminUsers``: the users who may run execute-script and the /lua operator POSTs; None: anyone.
    lua_admin_users: tuple[str, ...] | None = None
    #: ``MaximumHttpBodySize``, ``MaximumDicomElements``, ``MaximumInflatedSize``,
    #: ``MaximumCompressionRatio``: what one upload may cost (docs/security.md, "Bounds on input").
    input_bounds: InputBounds = field(default_factory=InputBounds)
    #: ``DicomScpTimeout`` (Orthanc): seconds an association may stay idle; None: no limit.
    dicom_scp_timeout: float | None = 30.0
    #: ``DicomScpAcseTimeout``: seconds a new connection has to send its association request.
    dicom_scp_acse_timeout: float = 10.0
    #: ``DicomScpMaximumAssociations``: associations served at once (connections still to ask for one
    #: do not count).
    dicom_scp_maximum_associations: int = 32
    #: ``SynchronousCMove``: a C-MOVE sends its instances before it answers (true), or answers at once and
    #: sends them in a job (``broker.dicom.retrieve_scp``).
    synchronous_c_move: bool = True
    #: ``DicomAlwaysAllowMove``, ``DicomAlwaysAllowGet``: any calling AET may C-MOVE, C-GET; false, only
    #: the modalities of ``DicomModalities`` that have ``AllowMove``, ``AllowGet``.
    dicom_always_allow_move: bool = False
    dicom_always_allow_get: bool = False
    #: ``DicomAlwaysAllowEcho``, ``DicomAlwaysAllowStore``: any calling AET may C-ECHO, C-STORE (Orthanc's
    #: default); false, only the modalities that have ``AllowEcho``, ``AllowStore``.
    dicom_always_allow_echo: bool = True
    dicom_always_allow_store: bool = True
    #: ``DefaultEncoding``: how files without a Specific Character Set are read.
    default_encoding: Encoding = LATIN1
    #: ``AcceptedTransferSyntaxes`` (patterns with ``*`` and ``?``, matched against the syntaxes Orthanc
    #: knows) and ``UnknownSopClassAccepted``: what the C-STORE SCP accepts.
    accepted_transfer_syntaxes: tuple[str, ...] = ORTHANC_TRANSFER_SYNTAXES
    unknown_sop_class_accepted: bool = False
    #: C-FIND SCP: person names compared case-sensitively; the most answers (0: no limit), the instance level apart.
    case_sensitive_pn: bool = False
    limit_find_results: int = 0
    limit_find_instances: int = 0
    dicom_always_allow_find: bool = False
    #: ``DicomAlwaysAllowFindWorklist``: any calling AET may query the worklists; false, only the modalities
    #: of ``DicomModalities`` that have ``AllowFindWorklist``.
    dicom_always_allow_find_worklist: bool = False
    #: The ``Worklists`` section: the modality worklist server.
    worklists: WorklistsSettings = field(default_factory=WorklistsSettings)
    #: ``MaximumStorageSize`` (MB), ``MaximumPatientCount`` (0: no limit), ``MaximumStorageMode`` and
    #: ``OverwriteInstances``.
    storage_limits: StorageLimits = field(default_factory=StorageLimits)
    #: ``StorageCompression``, ``StoreMD5ForAttachments`` and ``UserContentType`` (name → (number, MIME)).
    storage_compression: bool = False
    store_md5: bool = True
    #: ``StableAge``: seconds without a new instance before a patient, study or series is stable (Orthanc:
    #: a value <= 0 means 60).
    stable_age: float = 60.0
    user_content_types: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: ``LogExportedResources``: record what ``/modalities/{name}/store`` and ``/peers/{name}/store``
    #: send, for ``GET /exports`` (Orthanc 1.10's default: false).
    log_exported_resources: bool = False
    #: ``DicomModalities``, ``OrthancPeers`` and the options of the DICOM and HTTP clients.
    network: NetworkOptions = field(default_factory=NetworkOptions)
    #: ``ConcurrentJobs``, ``JobsHistorySize``, ``SaveJobs`` and the ``Jobs`` section.
    jobs: JobsSettings = field(default_factory=JobsSettings)
    #: ``MaximumIngestRate``: instances a second the store accepts (a token bucket of one second's worth);
    #: past it, new instances are refused (C-STORE 0xA700, REST 429). 0: no bound.
    maximum_ingest_rate: float = 0.0
    #: ``PostgreSQL``: the index in PostgreSQL (``EnableIndex``) instead of ``index.sqlite``.
    postgresql: PostgresSettings = field(default_factory=PostgresSettings)
    #: ``AwsS3Storage``: the files in S3-compatible object storage instead of ``StorageDirectory``.
    object_storage: ObjectStorageSettings | None = None
    #: ``Tenants`` (docs/tenants.md); empty: the server's options are the one, default, tenant.
    tenants: tuple[TenantConfig, ...] = ()
    #: ``TenantAdministrators``: users of ``RegisteredUsers`` who reach every tenant (``/tenants/{name}/...``).
    tenant_administrators: tuple[str, ...] = ()
    #: The file (or directory) this configuration was read from; ``POST /lua/reload`` reads it again.
    path: Path | None = None

    @property
    def dicom_allows_unknown_callers(self) -> bool:
        """Whether an AET that no modality of ``DicomModalities`` has may associate at all: some
        ``DicomAlwaysAllow*`` option is on (Orthanc's ``IsAllowedConnection``)."""
        return any((self.dicom_always_allow_echo, self.dicom_always_allow_store, self.dicom_always_allow_find,
                    self.dicom_always_allow_find_worklist, self.dicom_always_allow_move, self.dicom_always_allow_get))

    @classmethod
    def from_json(cls, raw: dict[str, Any], base_dir: Path, path: Path | None = None) -> Config:
        """The configuration of ``raw``; ``path``: the file or directory it was read from."""
        options = Section(raw)
        scripts = read_script_options(options, base_dir)
        users = options.option("RegisteredUsers", dict, {})
        if not all(isinstance(v, str) for v in users.values()):
            raise ConfigError("Option 'RegisteredUsers' must map user names to password strings")
        user_metadata = options.option("UserMetadata", dict, {})
        if not all(isinstance(v, int) and 1024 <= v <= 65535 for v in user_metadata.values()):
            raise ConfigError("Option 'UserMetadata' must map names to integers in [1024, 65535]")
        remote = options.option("RemoteAccessAllowed", bool, False)
        # Orthanc: authentication defaults to on as soon as remote access is allowed.
        auth = options.option("AuthenticationEnabled", bool, remote)
        aet = options.option("DicomAet", str, "ORTHANC", lambda a: 0 < len(a) <= 16, "of 1 to 16 characters")
        storage = Path(options.option("StorageDirectory", str, "luabroker-data"))
        port = (lambda p: 0 <= p < 65536), "in [0, 65535]"
        config = cls(
            **{f.name: getattr(scripts, f.name) for f in fields(ScriptOptions)},
            raw=raw,
            base_dir=base_dir,
            path=path,
            name=options.option("Name", str, "luabroker"),
            http_port=options.option("HttpPort", int, 8042, *port),
            http_bind="0.0.0.0" if remote else "127.0.0.1",
            dicom_port=options.option("DicomPort", int, 4242, *port),
            dicom_aet=aet,
            dicom_server_enabled=options.option("DicomServerEnabled", bool, True),
            workers=_workers(options.option("Workers", int, 0, lambda v: v >= 0, ">= 0 (0: one per core)")),
            storage_directory=storage if storage.is_absolute() else base_dir / storage,
            execute_lua_enabled=options.option("ExecuteLuaEnabled", bool, False),
            rest_api_write_to_file_system_enabled=options.option("RestApiWriteToFileSystemEnabled", bool, False),
            remote_access_allowed=remote,
            authentication_enabled=auth,
            registered_users=users,
            http_describe_errors=options.option("HttpDescribeErrors", bool, True),
            # Orthanc refuses a value that is not a boolean; luabroker has always read these two loosely.
            ssl_enabled=bool(options.get("SslEnabled", False)),
            check_revisions=bool(options.get("CheckRevisions", False)),
            metrics_enabled=options.option("MetricsEnabled", bool, True),
            user_metadata=user_metadata,
            lua_interpreter=read_interpreter(options),
            # LuaAdminUsers: only they may run execute-script and the operator's POST /lua/...; absent: anyone.
            lua_admin_users=_user_names(options, "LuaAdminUsers", users, auth),
            input_bounds=_input_bounds(options),
            dicom_scp_timeout=options.option("DicomScpTimeout", float, 30.0, lambda v: v >= 0, ">= 0") or None,
            dicom_scp_acse_timeout=options.option("DicomScpAcseTimeout", float, 10.0, lambda v: v > 0, "> 0"),
            dicom_scp_maximum_associations=options.option("DicomScpMaximumAssociations", int, 32,
                                                          lambda v: v >= 1, ">= 1"),
            synchronous_c_move=options.option("SynchronousCMove", bool, True),
            dicom_always_allow_move=options.option("DicomAlwaysAllowMove", bool, False),
            dicom_always_allow_get=options.option("DicomAlwaysAllowGet", bool, False),
            dicom_always_allow_echo=options.option("DicomAlwaysAllowEcho", bool, True),
            dicom_always_allow_store=options.option("DicomAlwaysAllowStore", bool, True),
            default_encoding=find_encoding(options.option("DefaultEncoding", str, LATIN1.name,
                                                          lambda name: find_encoding(name) is not None,
                                                          "one of " + ", ".join(ENCODINGS))) or LATIN1,
            accepted_transfer_syntaxes=_accepted_transfer_syntaxes(options),
            unknown_sop_class_accepted=options.option("UnknownSopClassAccepted", bool, False),
            case_sensitive_pn=options.option("CaseSensitivePN", bool, False),
            limit_find_results=options.option("LimitFindResults", int, 0, lambda v: v >= 0, ">= 0"),
            limit_find_instances=options.option("LimitFindInstances", int, 0, lambda v: v >= 0, ">= 0"),
            dicom_always_allow_find=options.option("DicomAlwaysAllowFind", bool, False),
            dicom_always_allow_find_worklist=options.option("DicomAlwaysAllowFindWorklist", bool, False),
            worklists=read_worklists(options, base_dir),
            storage_limits=StorageLimits(
                max_size=options.option("MaximumStorageSize", int, 0, lambda v: v >= 0, ">= 0") * MIB or None,
                max_patients=options.option("MaximumPatientCount", int, 0, lambda v: v >= 0, ">= 0") or None,
                overwrite=options.option("OverwriteInstances", bool, False),
                reject=options.option("MaximumStorageMode", str, "Recycle", lambda v: v in ("Recycle", "Reject"),
                                      '"Recycle" or "Reject"') == "Reject"),
            storage_compression=options.option("StorageCompression", bool, False),
            store_md5=options.option("StoreMD5ForAttachments", bool, True),
            stable_age=_stable_age(options.option("StableAge", float, 60.0)),
            user_content_types=_user_content_types(options),
            log_exported_resources=options.option("LogExportedResources", bool, False),
            network=read_network_options(options, base_dir, aet),
            jobs=read_jobs_settings(options, aet, trusted=bool(scripts.lua_trusted_scripts)),
            postgresql=read_postgresql(options),
            object_storage=read_object_storage(options),
            maximum_ingest_rate=options.option("MaximumIngestRate", float, 0.0, lambda v: v >= 0, ">= 0 (0: no bound)"),
            tenant_administrators=_user_names(options, "TenantAdministrators", users, auth) or (),
        )
        return replace(config, tenants=read_tenants(config, options, cls.from_json))

    @classmethod
    def load(cls, path: str | Path | None) -> Config:
        """Read a configuration file, or every ``*.json`` of a directory (merged in name order, as
        Orthanc does). ``None`` gives the defaults, relative to the current directory."""
        if path is None:
            return cls.from_json({}, Path.cwd())
        path = Path(path).resolve()
        return cls.from_json(read_options(path), path if path.is_dir() else path.parent, path)

    @property
    def supervised(self) -> bool:
        """Whether the server runs as worker processes under a supervisor, the coordinator role elected
        among them (docs/workers.md): with several workers, and on PostgreSQL, where the nodes of a
        cluster elect one coordinator among all their workers (docs/postgresql.md)."""
        return not self.single_process and (self.workers > 1 or self.postgresql.enable_index)

    @property
    def node_name(self) -> str:
        """This node's name among the nodes sharing one PostgreSQL index: ``PostgreSQL.NodeName``, or
        the host name and HTTP port."""
        return self.postgresql.node_name or f"{socket.gethostname()}-{self.http_port}"

    def tenant(self, name: str) -> Config:
        """The configuration the tenant ``name`` runs with (``default``: this one)."""
        if name == DEFAULT_TENANT:
            return self
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant.config
        raise ConfigError(f"The configuration has no tenant {name!r} (Tenants)")


def _user_names(options: Section, name: str, users: dict[str, str], authentication: bool) -> tuple[str, ...] | None:
    """``LuaAdminUsers`` or ``TenantAdministrators``: names of ``RegisteredUsers``, which need
    authentication (docs/security.md). None when absent."""
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(user, str) for user in value):
        raise bad_value(name, value, "a list of user names")
    for user in value:
        if user not in users:
            raise ConfigError(f"Option '{name}' names {user!r}, which is not in 'RegisteredUsers'")
    if not authentication:
        raise ConfigError(f"Option '{name}' needs 'AuthenticationEnabled': without authentication no "
                          "request has a user name")
    return tuple(value)


def _user_content_types(options: Section) -> dict[str, tuple[int, str]]:
    """``UserContentType``: ``{"name": number}`` or ``{"name": [number, "MIME type"]}``, 1024..65535."""
    value = options.get("UserContentType", {})
    if not isinstance(value, dict):
        raise bad_value("UserContentType", value, "an object")
    types: dict[str, tuple[int, str]] = {}
    for name, entry in value.items():
        number, mime = (entry, "") if not isinstance(entry, list) else (entry + [""])[:2]
        if isinstance(number, bool) or not isinstance(number, int) or not 1024 <= number <= 65535 \
                or not isinstance(mime, str):
            raise bad_value(f"UserContentType.{name}", entry, "a number in [1024, 65535], or [number, MIME type]")
        types[name] = (number, mime)
    return types


def _accepted_transfer_syntaxes(options: Section) -> tuple[str, ...]:
    value = options.get("AcceptedTransferSyntaxes", [ALL_PATTERN])
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not all(isinstance(pattern, str) for pattern in patterns):
        raise bad_value("AcceptedTransferSyntaxes", value, "a string or a list of strings")
    return matching_transfer_syntaxes(patterns)


def _input_bounds(options: Section) -> InputBounds:
    """The bounds on input (docs/security.md, "Bounds on input"). As Orthanc's ``MaximumStorageSize``,
    sizes are in MB (MiB) and 0 means no limit."""
    base, inflate = InputBounds(), InflateBound()

    def size_mb(name: str, default: int | None) -> int | None:
        return options.option(name, int, (default or 0) // MIB, lambda v: v >= 0, ">= 0") * MIB or None

    elements = options.option("MaximumDicomElements", int, base.max_elements or 0, lambda v: v >= 0, ">= 0")
    ratio = options.option("MaximumCompressionRatio", float, inflate.max_ratio or 0.0, lambda v: v == 0 or v >= 1,
                           "(0, or >= 1)")
    return InputBounds(max_body=size_mb("MaximumHttpBodySize", base.max_body),
                       max_dicom_message=size_mb("MaximumDicomMessageSize", base.max_dicom_message),
                       max_elements=elements or None,
                       inflate=InflateBound(max_size=size_mb("MaximumInflatedSize", inflate.max_size),
                                            max_ratio=ratio or None))


def _workers(count: int) -> int:
    """``Workers``: 0 (the default) means one process per core this process may run on."""
    return count if count > 0 else len(os.sched_getaffinity(0))


def _stable_age(seconds: float) -> float:
    """Orthanc reads a ``StableAge`` of 0 or less as its default, 60 s."""
    return seconds if seconds > 0 else 60.0
