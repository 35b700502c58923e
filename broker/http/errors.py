"""The one place where an error becomes an HTTP answer (Orthanc's error JSON, or a bare status)."""
from __future__ import annotations

import json
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import BareHttpStatus, OrthancError


def orthanc_error_body(exc: OrthancError, method: str, uri: str) -> bytes:
    """Orthanc's error document: tab-indented, sorted keys, ``Details`` only when there are some, a
    newline at the end."""
    body = {
        "HttpError": HTTPStatus(exc.http_status).phrase,
        "HttpStatus": exc.http_status,
        "Message": exc.message,
        "Method": method,
        "OrthancError": exc.message,
        "OrthancStatus": int(exc.code),
        "Uri": uri,
    }
    if exc.details:
        body["Details"] = exc.details
    return (json.dumps(body, indent="\t", separators=(",", " : "), sort_keys=True, ensure_ascii=False)
            + "\n").encode()


def error_response(request: Request, exc: Exception, describe: bool) -> Response:
    if isinstance(exc, BareHttpStatus):
        return Response(b"", exc.http_status, headers=exc.headers)
    assert isinstance(exc, OrthancError)
    if not describe:
        return Response(b"", exc.http_status)
    # Without a Content-Type, as Orthanc sends its error documents.
    return Response(orthanc_error_body(exc, request.method, request.url.path), exc.http_status)
