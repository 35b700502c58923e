"""The HTTP client behind the Lua ``Http*`` built-ins (Orthanc's one ``HttpClient`` per Lua state).

State that Orthanc keeps per Lua state is kept here per sandbox process name (``CallContext.sandbox``):
the credentials of ``SetHttpCredentials`` and the timeout of ``SetHttpTimeout`` persist across calls of
that process; headers are given per call and never persist. The requests themselves share one pooled
``httpx.Client`` configured from ``HttpProxy``, ``HttpsVerifyPeers`` and ``HttpsCACertificates``.

The timeout (``SetHttpTimeout``, else ``HttpTimeout``; <= 0 means 60 s) bounds both connecting and the
whole transfer, as curl's ``CURLOPT_TIMEOUT``; it is cut to what is left of the calling script's
wall-clock budget (``LuaSandbox.WallTimeout``). Redirects are followed. ``LuaHttpAllowedHosts`` (ours,
default: any host, as Orthanc) limits the hosts a script may reach, redirects included: a refused host
is never connected to.
"""
from __future__ import annotations

import fnmatch
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from broker.config.network import HttpOptions
from broker.peers import build_http_client
from sandbox import bounded_by_budget

log = logging.getLogger("luabroker.lua")


class HostRefused(Exception):
    """``LuaHttpAllowedHosts`` does not list the host of a request (or of one of its redirects)."""


class HttpTransportError(Exception):
    """No HTTP answer: bad URL, unsupported scheme, connection failure, TLS failure, timeout."""


@dataclass
class LuaHttpState:
    """What one Lua state's client remembers between calls."""

    credentials: tuple[str, str] | None = None
    #: Seconds set by ``SetHttpTimeout`` (already truncated); None means ``HttpTimeout``.
    timeout: int | None = None


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HostPolicy:
    """``LuaHttpAllowedHosts``: shell-style patterns (``*.example.org``, ``10.0.0.*``, ``api:8443``)
    matched, without case, against the host or ``host:port`` of each request; None allows any host."""

    def __init__(self, patterns: tuple[str, ...] | None) -> None:
        self.patterns = None if patterns is None else tuple(p.lower() for p in patterns)

    def allows(self, url: httpx.URL) -> bool:
        if self.patterns is None:
            return True
        host = url.host.lower()
        with_port = f"{host}:{url.port or {'http': 80, 'https': 443}.get(url.scheme, 0)}"
        return any(fnmatch.fnmatchcase(host, p) or fnmatch.fnmatchcase(with_port, p) for p in self.patterns)


class LuaHttpClient:
    """The ``Http*`` built-ins' client: per-sandbox state, one shared connection pool."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        self.policy = HostPolicy(self.options.lua_allowed_hosts)
        self._states: dict[str, LuaHttpState] = {}
        self._lock = threading.Lock()
        self._client = build_http_client(self.options, event_hooks={"request": [self._check_host]})

    def state(self, sandbox: str) -> LuaHttpState:
        with self._lock:
            return self._states.setdefault(sandbox, LuaHttpState())

    def set_credentials(self, sandbox: str, username: str, password: str) -> None:
        self.state(sandbox).credentials = (username, password)

    def set_timeout(self, sandbox: str, seconds: int) -> None:
        self.state(sandbox).timeout = seconds

    def forget(self, sandbox: str) -> None:
        """Drop a process's state (its Lua state is gone)."""
        with self._lock:
            self._states.pop(sandbox, None)

    def request(self, sandbox: str, method: str, url: str, body: bytes | None = None,
                headers: Mapping[bytes, bytes] | None = None) -> HttpAnswer:
        """One request with the sandbox's credentials and timeout. Raises ``HostRefused`` or
        ``HttpTransportError``; any HTTP status is an answer."""
        state = self.state(sandbox)
        # Never longer than what is left of the calling script's budget (sandbox.budget).
        timeout = max(0.001, bounded_by_budget(self.options.effective_timeout(state.timeout)))
        deadline = time.monotonic() + timeout
        all_headers = dict(headers or {})
        if method in ("POST", "PUT") and (method == "POST" or body) and \
                not any(name.lower() == b"content-type" for name in all_headers):
            all_headers[b"Content-Type"] = b"application/x-www-form-urlencoded"  # curl's default
        try:
            request = self._client.build_request(method, url, content=body or None, headers=all_headers,
                                                 timeout=timeout)
            auth = httpx.BasicAuth(*state.credentials) if state.credentials is not None else None
            response = self._client.send(request, auth=auth, stream=True)
            try:
                chunks = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout(f"the transfer took longer than {timeout:g} s", request=request)
                return HttpAnswer(response.status_code, b"".join(chunks))
            finally:
                response.close()
        except HostRefused:
            raise
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, UnicodeError) as exc:
            raise HttpTransportError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()

    def _check_host(self, request: httpx.Request) -> None:
        if not self.policy.allows(request.url):
            raise HostRefused(f"the host {request.url.host!r} is not in LuaHttpAllowedHosts")
