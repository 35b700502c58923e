"""Bounds on input: how much one upload may cost before it is refused.

Reading input amplifies it: every 8 bytes of a DICOM dataset can become a Python object of about
90 bytes, and a compressed stream (deflated transfer syntax, ZIP entry, gzip body) can inflate a
thousandfold. Without bounds a few megabytes cost gigabytes of memory and minutes of CPU (issue 7,
finding 3). The bounds live here, in one frozen value built from the configuration
(``broker.config``), and are checked where the amplification happens: ``broker.core.dicom_parse``
counts elements, ``inflate`` and ``broker.core.zip_reader`` stop inflating at the limit. Each bound,
its default and its option are described in docs/security.md ("Bounds on input").

Files already stored are read with ``UNBOUNDED``: they were accepted once, and lowering a bound
later must not make them unreadable.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

MIB = 1024 * 1024

#: Inflated data up to this size is never refused for its compression ratio: a blank image
#: compresses 1000:1 and is legitimate; past this size such a ratio is a bomb, not an image.
RATIO_GRACE = 64 * MIB
#: Each this many bytes of a DICOM file allow one element more than ``max_elements``: an element
#: costs about 90 bytes of memory, so elements allowed this way cost less than a third of the file
#: (already in memory), and a large file (a whole-slide image with per-frame items) is never refused.
BYTES_PER_EXTRA_ELEMENT = 256
#: The central directory of a ZIP archive may take this much, or a 16th of the archive if that is more:
#: zipfile builds an object of about 500 bytes for each entry listed there (46 bytes at least, some 130
#: with a typical path), so this allows some 65,000 entries and costs at most 90 MB; past it, the
#: directory costs less memory than the archive itself.
ZIP_DIRECTORY_FLOOR = 8 * MIB
_ARCHIVE_BYTES_PER_DIRECTORY_BYTE = 16
_INFLATE_CHUNK = 4 * MIB


class InputTooLarge(ValueError):
    """Input would cost more than a bound allows; the message names the bound and its option."""


@dataclass(frozen=True)
class InflateBound:
    """What compressed data may inflate to: at most ``max_size`` bytes (``MaximumInflatedSize``) and,
    past ``RATIO_GRACE``, at most ``max_ratio`` times its compressed size (``MaximumCompressionRatio``).
    None means no limit."""

    max_size: int | None = 4096 * MIB
    max_ratio: float | None = 100.0

    def allowed(self, compressed_size: int) -> int | None:
        """The most one stream of ``compressed_size`` bytes may inflate to; None if unbounded."""
        limits = [limit for limit in (self.max_size, self.ratio_allows(compressed_size)) if limit is not None]
        return min(limits) if limits else None

    def ratio_allows(self, compressed_size: int) -> int | None:
        """The most ``compressed_size`` bytes may inflate to by the ratio alone: the bound of a whole
        made of several streams (a ZIP archive), each of which ``allowed`` bounds in size."""
        return None if self.max_ratio is None else max(RATIO_GRACE, int(self.max_ratio * compressed_size))

    def check(self, compressed_size: int, inflated_size: int, what: str, *, whole: bool = False) -> None:
        """Raise ``InputTooLarge`` if ``what`` (``compressed_size`` bytes) inflates to too much."""
        allowed = self.ratio_allows(compressed_size) if whole else self.allowed(compressed_size)
        if allowed is not None and inflated_size > allowed:
            raise InputTooLarge(self.message(what, compressed_size, allowed, inflated_size))

    def message(self, what: str, compressed_size: int, allowed: int, inflated_size: int | None) -> str:
        """Why ``what`` is refused; ``inflated_size`` None when inflating stopped at the bound."""
        found = f"{inflated_size} bytes" if inflated_size is not None else f"more than {allowed} bytes"
        return (f"{what} inflates to {found} from {compressed_size} bytes; at most {allowed} are allowed "
                f"(MaximumInflatedSize {_mib(self.max_size)}, MaximumCompressionRatio "
                f"{'none' if self.max_ratio is None else f'{self.max_ratio:g}'} past {RATIO_GRACE // MIB} MiB)")


def inflate(data: bytes | memoryview, bound: InflateBound, what: str, *, wbits: int = -zlib.MAX_WBITS) -> bytes:
    """Inflate ``data`` (raw deflate by default; ``wbits=31`` for gzip, 15 for zlib), stopping as soon
    as the output passes ``bound``: the work done is at most what the bound allows. Raises
    ``InputTooLarge`` past the bound, ``zlib.error`` for corrupt data, ``EOFError`` for a cut stream."""
    allowed = bound.allowed(len(data))
    inflater = zlib.decompressobj(wbits)
    if allowed is None:
        output = inflater.decompress(data) + inflater.flush()
    else:
        pieces, size, pending = [], 0, data
        while pending and not inflater.eof:
            piece = inflater.decompress(pending, min(_INFLATE_CHUNK, allowed + 1 - size))
            pieces.append(piece)
            size += len(piece)
            if size > allowed:
                raise InputTooLarge(bound.message(what, len(data), allowed, None))
            pending = inflater.unconsumed_tail
        output = b"".join(pieces)
    if not inflater.eof:
        raise EOFError(f"{what} ends before its compressed stream does")
    return output


@dataclass(frozen=True)
class InputBounds:
    """Every bound on input, as configured (docs/security.md, "Bounds on input")."""

    #: ``MaximumHttpBodySize``: bytes of one HTTP request body; None: no limit.
    max_body: int | None = 4096 * MIB
    #: ``MaximumDicomMessageSize``: bytes of the dataset of one DIMSE message received (a C-STORE's
    #: instance, a query); None: no limit.
    max_dicom_message: int | None = 4096 * MIB
    #: ``MaximumDicomElements``: elements and sequence items of one DICOM file (more for large files,
    #: see ``element_budget``); None: no limit.
    max_elements: int | None = 1_000_000
    inflate: InflateBound = field(default_factory=InflateBound)

    def element_budget(self, file_size: int) -> int | None:
        """Elements and items a DICOM file of ``file_size`` bytes may hold; None if unbounded."""
        if self.max_elements is None:
            return None
        return max(self.max_elements, file_size // BYTES_PER_EXTRA_ELEMENT)



def zip_directory_budget(archive_size: int) -> int:
    """Bytes the central directory of a ZIP archive of ``archive_size`` bytes may take."""
    return max(ZIP_DIRECTORY_FLOOR, archive_size // _ARCHIVE_BYTES_PER_DIRECTORY_BYTE)


#: For files already stored: they passed the bounds in force when they came in.
UNBOUNDED = InputBounds(max_body=None, max_dicom_message=None, max_elements=None,
                        inflate=InflateBound(max_size=None, max_ratio=None))


def _mib(size: int | None) -> str:
    return "none" if size is None else f"{size / MIB:g} MiB"
