"""Reading the files of a ZIP archive (``POST /instances``) within bounds.

A ZIP archive amplifies three ways, each bounded before anything is stored (docs/security.md,
"Bounds on input"): the central directory (``zipfile`` builds an object of about 500 bytes per entry
it lists, each listed in as few as 46 bytes), the declared sizes of the entries (``InflateBound``, for
each entry and for the archive as a whole) and the real sizes: an entry is read up to its declared
size only, so a header that understates it ends in a CRC error, not in a gigabyte of memory.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator

from broker.core.bounds import InflateBound, InputTooLarge, zip_directory_budget

_END = struct.Struct("<4s4H2LH")             # end of central directory record
_END_COMMENT_MAX = 0xFFFF
_ZIP64_LOCATOR = struct.Struct("<4sLQL")     # just before the end record
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")     # just before the locator


def read_entries(data: bytes, bound: InflateBound) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each file of the archive ``data``, in order. Raises ``InputTooLarge`` before
    the first is read if the archive lists or inflates to too much, ``zipfile.BadZipFile`` if ``data``
    is not a ZIP archive or when an entry cannot be read (corrupt, encrypted, unknown compression)."""
    directory = _directory_size(data)
    if directory is not None and directory > zip_directory_budget(len(data)):
        raise InputTooLarge(f"the central directory of the ZIP archive takes {directory} bytes; at most "
                            f"{zip_directory_budget(len(data))} are allowed for an archive of {len(data)} bytes")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = [entry for entry in archive.infolist() if not entry.is_dir()]
        for entry in entries:
            bound.check(entry.compress_size, entry.file_size, f"the ZIP entry {entry.filename!r}")
        bound.check(len(data), sum(entry.file_size for entry in entries), "the ZIP archive", whole=True)
        for entry in entries:
            try:
                with archive.open(entry) as handle:
                    content = handle.read(entry.file_size)
            except (zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
                raise zipfile.BadZipFile(f"cannot read the entry {entry.filename!r}: {exc}") from None
            yield entry.filename, content


def _directory_size(data: bytes) -> int | None:
    """Bytes of central directory the end record declares (ZIP64 too), as ``zipfile`` will read them;
    None without an end record (``zipfile`` then refuses the archive)."""
    start = data.rfind(b"PK\x05\x06", max(0, len(data) - _END.size - _END_COMMENT_MAX))
    if start < 0 or len(data) - start < _END.size:
        return None
    size: int = _END.unpack_from(data, start)[5]
    locator = start - _ZIP64_LOCATOR.size
    if locator >= _ZIP64_END.size and data[locator:locator + 4] == b"PK\x06\x07":
        record = _ZIP64_END.unpack_from(data, locator - _ZIP64_END.size)
        if record[0] == b"PK\x06\x06":
            size = record[8]
    return size
