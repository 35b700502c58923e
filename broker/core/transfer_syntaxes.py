"""The transfer syntaxes Orthanc 1.10 knows (its ``DicomTransferSyntax`` enumeration, in its order),
and Orthanc's wildcard patterns over them (``AcceptedTransferSyntaxes``,
``PUT /tools/accepted-transfer-syntaxes``)."""
from __future__ import annotations

import re
from collections.abc import Iterable

ORTHANC_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",          # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",        # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",     # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",        # Explicit VR Big Endian
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(50, 67)),  # JPEG processes 1 to 29
    "1.2.840.10008.1.2.4.70",     # JPEG lossless, first-order prediction
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",   # JPEG-LS
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(90, 96)),  # JPEG 2000, JPIP
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),  # MPEG-2, MPEG-4, HEVC
    "1.2.840.10008.1.2.5",        # RLE lossless
    "1.2.840.10008.1.2.6.1",      # RFC 2557 MIME encapsulation
    "1.2.840.10008.1.2.6.2",      # XML encoding
)

#: What Orthanc accepts by default: every transfer syntax it knows.
ALL_PATTERN = "1.2.840.10008.1.*"


def _regex(pattern: str) -> re.Pattern[str]:
    """Orthanc's ``WildcardToRegularExpression``: ``*`` any run of characters, ``?`` one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z")


def matching_transfer_syntaxes(patterns: Iterable[str]) -> tuple[str, ...]:
    """The known transfer syntaxes that one of ``patterns`` matches, in Orthanc's order."""
    regexes = [_regex(pattern) for pattern in patterns]
    return tuple(uid for uid in ORTHANC_TRANSFER_SYNTAXES if any(regex.match(uid) for regex in regexes))
