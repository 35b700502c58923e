"""The HTTP client of ``OrthancPeers``: sends DICOM files to another Orthanc (or luabroker).

``PeerClient.store(peer, data)`` POSTs one DICOM file to ``<peer url>instances`` with the peer's
credentials (HTTP Basic, only when both user and password are set, as Orthanc) and ``HttpHeaders``,
within the peer's ``Timeout`` or else ``HttpTimeout``, through ``HttpProxy``, verifying TLS as
``HttpsVerifyPeers`` / ``HttpsCACertificates`` say. Any failure raises ``PeerError`` (Orthanc's
``NetworkProtocol``, error 9), which carries the HTTP status when there was an answer.
"""
from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import httpx

from broker.config import ConfigError
from broker.config.network import HttpOptions, Peer
from broker.errors import ErrorCode, OrthancError
from broker.network import NetworkRegistry

log = logging.getLogger("luabroker.peers")


class PeerError(OrthancError):
    """A request to an Orthanc peer failed; ``status`` is the HTTP status, None for a transport error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(ErrorCode.NETWORK_PROTOCOL, message)
        self.status = status


def build_http_client(options: HttpOptions, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` configured from Orthanc's HTTP options (shared with the Lua client)."""
    try:
        verify = options.ssl_context()
    except OSError as exc:
        raise ConfigError(f"Option 'HttpsCACertificates' names {options.ca_certificates!r}, which cannot be "
                          f"read: {exc.strerror or exc}") from exc
    client = httpx.Client(verify=verify, proxy=options.proxy_url(), follow_redirects=True,
                          timeout=options.effective_timeout(), **kwargs)
    # curl (Orthanc's client) asks for no compression; keep bodies as the server sends them.
    del client.headers["Accept-Encoding"]
    client.headers["User-Agent"] = "luabroker"
    return client


class PeerClient:
    """Requests to the peers of a ``NetworkRegistry``; thread-safe (one pooled ``httpx.Client``)."""

    def __init__(self, network: NetworkRegistry, options: HttpOptions | None = None) -> None:
        self.network = network
        self.options = options or HttpOptions()
        self._client = build_http_client(self.options)

    def store(self, peer: str | Peer, data: bytes, compress: bool = False) -> dict[str, Any]:
        """POST one DICOM file to the peer's ``/instances`` (gzipped at level 9 with ``compress``, as
        Orthanc's ``"Compress": true``); the peer's JSON answer (``ID``, ``Status``, …). Raises
        ``PeerError``, or ``OrthancError`` ``UnknownResource`` for an unknown peer name."""
        headers = {"Content-Type": "application/dicom"}
        if compress:
            data, headers["Content-Encoding"] = gzip.compress(data, compresslevel=9, mtime=0), "gzip"
        answer = self._request(peer, "POST", "instances", content=bytes(data), headers=headers)
        try:
            value = answer.json()
        except (ValueError, UnicodeDecodeError):
            raise PeerError(f"The peer at {answer.request.url} answered something that is not JSON",
                            answer.status_code) from None
        return value if isinstance(value, dict) else {"Answer": value}

    def system(self, peer: str | Peer) -> Any:
        """The peer's ``GET /system`` (``GET /peers/{name}/system``)."""
        answer = self._request(peer, "GET", "system")
        try:
            return answer.json()
        except (ValueError, UnicodeDecodeError):
            raise PeerError(f"The peer at {answer.request.url} answered something that is not JSON",
                            answer.status_code) from None

    def close(self) -> None:
        self._client.close()

    def _request(self, peer: str | Peer, method: str, path: str, *, content: bytes | None = None,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        target = peer if isinstance(peer, Peer) else self.network.peer(peer)
        if target.certificate_file or target.pkcs11:
            raise PeerError(f"The peer at {target.url} needs a client certificate or PKCS#11, which luabroker "
                            "does not support")
        url = target.url + path
        all_headers = {**(headers or {}), **target.headers}
        timeout = self.options.effective_timeout(target.timeout or None)
        try:
            answer = self._client.request(method, url, content=content, headers=all_headers, auth=target.auth,
                                          timeout=timeout)
        except httpx.HTTPError as exc:
            raise PeerError(f"HTTP request to the peer at {url} failed: {exc or type(exc).__name__}") from exc
        if not answer.is_success:
            detail = answer.text[:500] if answer.content else ""
            try:
                detail = json.loads(answer.content).get("Details", detail)
            except (ValueError, AttributeError, UnicodeDecodeError):
                pass
            raise PeerError(f"The peer at {url} answered HTTP {answer.status_code}" + (f": {detail}" if detail else ""),
                            answer.status_code)
        return answer
