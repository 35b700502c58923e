"""Reading a request body: bounded, and spooled to disk past a threshold.

starlette's ``Request.body()`` keeps every chunk, then joins them: two copies of a body of any size
(a 200 MiB upload peaked at 516 MiB; issue 7, finding 3). Here a body larger than
``MaximumHttpBodySize`` is refused with 413 as soon as that is known: from ``Content-Length`` before
anything is read (a client that sent ``Expect: 100-continue`` then never sends the body), or when the
bytes received pass it. The chunks are kept in memory up to ``SPOOL_THRESHOLD``, then go to a temporary
file as they arrive, so the handler of a large body gets the one copy read back from it (and a request
without a body creates no file).
"""
from __future__ import annotations

import tempfile
import zlib

from starlette.requests import Request

from broker.core.bounds import MIB, InflateBound, InputTooLarge, inflate
from broker.errors import ErrorCode, OrthancError
from broker.http.threads import in_thread

#: Bodies up to this size stay in memory (every JSON body, most single instances); larger ones are
#: written to a temporary file (``TMPDIR``) as they arrive.
SPOOL_THRESHOLD = 4 * MIB


async def read_body(request: Request, maximum: int | None) -> bytes:
    """The body of ``request``; ``OrthancError`` with HTTP status 413 past ``maximum`` bytes (None: no limit)."""
    declared = request.headers.get("content-length", "")
    if maximum is not None and declared.isdigit() and int(declared) > maximum:
        raise _too_large(int(declared), maximum)
    chunks: list[bytes] = []
    spool = None
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if maximum is not None and size > maximum:
                raise _too_large(None, maximum)
            if spool is None and size > SPOOL_THRESHOLD:
                spool = tempfile.TemporaryFile()
                await in_thread(spool.writelines, chunks)  # on disk: not in the event loop
                chunks = []
            if spool is not None:
                await in_thread(spool.write, chunk)
            elif chunk:
                chunks.append(chunk)
        if spool is None:
            return b"".join(chunks)
        spool.seek(0)
        return await in_thread(spool.read)
    finally:
        if spool is not None:
            spool.close()


def decoded_body(body: bytes, encoding: str, bound: InflateBound) -> bytes:
    """The body without its ``Content-Encoding``: gzip is inflated (within ``MaximumInflatedSize``);
    other encodings are ignored, as Orthanc does."""
    if encoding.strip().lower() != "gzip":
        return body
    try:
        return inflate(body, bound, "the gzip request body", wbits=31)
    except InputTooLarge as exc:
        raise OrthancError(ErrorCode.BAD_REQUEST, str(exc), http_status=413) from None
    except (zlib.error, EOFError) as exc:
        raise OrthancError(ErrorCode.INTERNAL_ERROR, f"Cannot inflate the gzip request body: {exc}") from None


def _too_large(size: int | None, maximum: int) -> OrthancError:
    found = f"{size} bytes" if size is not None else f"more than {maximum} bytes"
    return OrthancError(ErrorCode.BAD_REQUEST, f"The request body has {found}; at most {maximum} are allowed "
                        f"(MaximumHttpBodySize, {maximum / MIB:g} MB)", http_status=413)
