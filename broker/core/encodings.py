"""Orthanc's encodings (its ``Encoding`` enumeration): the names of ``DefaultEncoding`` and of
``/tools/default-encoding``, with the DICOM Specific Character Set each stands for and the Python codec
that decodes it.

The default encoding is how a file without a Specific Character Set (0008,0005), or with an empty
one, is read: its main tags in the index, its JSON views, the tags of Lua callbacks.
"""
from __future__ import annotations

from dataclasses import dataclass

from broker.errors import ErrorCode, OrthancError


@dataclass(frozen=True, slots=True)
class Encoding:
    name: str           # Orthanc's name, as in "DefaultEncoding": "Latin1"
    term: str | None    # the DICOM defined term; None for Windows1251, which DICOM does not define
    codec: str          # the Python codec


ENCODINGS: dict[str, Encoding] = {encoding.name: encoding for encoding in (
    Encoding("Ascii", "ISO_IR 6", "ascii"),
    Encoding("Utf8", "ISO_IR 192", "utf_8"),
    Encoding("Latin1", "ISO_IR 100", "latin_1"),
    Encoding("Latin2", "ISO_IR 101", "iso8859_2"),
    Encoding("Latin3", "ISO_IR 109", "iso8859_3"),
    Encoding("Latin4", "ISO_IR 110", "iso8859_4"),
    Encoding("Latin5", "ISO_IR 148", "iso8859_9"),
    Encoding("Cyrillic", "ISO_IR 144", "iso8859_5"),
    Encoding("Windows1251", None, "cp1251"),
    Encoding("Arabic", "ISO_IR 127", "iso8859_6"),
    Encoding("Greek", "ISO_IR 126", "iso8859_7"),
    Encoding("Hebrew", "ISO_IR 138", "iso8859_8"),
    Encoding("Thai", "ISO_IR 166", "tis_620"),
    Encoding("Japanese", "ISO_IR 13", "shift_jis"),
    Encoding("Chinese", "GB18030", "gb18030"),
    Encoding("JapaneseKanji", "ISO 2022 IR 87", "iso2022_jp"),
    Encoding("Korean", "ISO 2022 IR 149", "euc_kr"),
    Encoding("SimplifiedChinese", "ISO 2022 IR 58", "gb2312"),
)}

#: Orthanc's default ``DefaultEncoding``.
LATIN1 = ENCODINGS["Latin1"]


_BY_UPPER_NAME = {name.upper(): encoding for name, encoding in ENCODINGS.items()}


def find_encoding(name: str) -> Encoding | None:
    """The encoding of an Orthanc name, in any case (as Orthanc's ``StringToEncoding``)."""
    return _BY_UPPER_NAME.get(name.upper())


_BY_TERM = {term: encoding for encoding in ENCODINGS.values() if encoding.term is not None
            for term in (encoding.term, encoding.term.replace("ISO_IR ", "ISO 2022 IR ")) if term != "ISO 2022 IR 192"}
_BY_TERM["GBK"] = ENCODINGS["Chinese"]


def encoding_of_term(term: str) -> Encoding | None:
    """The encoding a Specific Character Set names, as Orthanc's ``GetDicomEncoding`` reads it (spaces
    around and case ignored; ``ISO 2022 IR n`` as ``ISO_IR n``, ``GBK`` as ``GB18030``); None for another."""
    return _BY_TERM.get(term.strip().upper())


def encoding_named(name: str) -> Encoding:
    encoding = find_encoding(name)
    if encoding is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown encoding: {name}")
    return encoding
