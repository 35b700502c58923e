"""JPEG and JPEG-LS through DCMTK's command-line codecs, as Orthanc 1.10 encodes and decodes them.

Orthanc links DCMTK's codecs (``dcmjpeg``, ``dcmjpls``); the same codecs ship as ``dcmcjpeg``,
``dcmdjpeg``, ``dcmcjpls`` and ``dcmdjpls`` in the ``dcmtk`` package that luabroker already installs.
Running them gives the same pixels as Orthanc (the IJG decoder of lossy JPEG rounds differently from
libjpeg-turbo; 12-bit extended JPEG and lossless JPEG are decoded at all), and the encoders pydicom
lacks (JPEG baseline, extended, lossless) or lacks in practice (big endian: pydicom does not swap
pixel data). The options are set to the ones Orthanc registers its codecs with, so that the encoded
bytes are Orthanc's: quality 90; standard Huffman tables (``-ho``: the library's default, where the
tools optimize); predictor 6 for lossless; JPEG-LS in "cooked" mode (``+pc``: the precision is
BitsStored), an odd JPEG-LS bitstream padded with a zero byte (``+pz``); YCbCr converted to RGB on
decoding; a new SOP Instance UID for lossy compression.

Each run is a separate process on temporary files: a malformed file can make a codec fail or crash,
never the server, and a run has a wall-clock bound (``TIMEOUT``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

#: (tool, options) that write an uncompressed little-endian file in each transfer syntax.
ENCODERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "1.2.840.10008.1.2.2": ("dcmconv", ("+tb",)),       # Explicit VR Big Endian (pixel data byte-swapped)
    "1.2.840.10008.1.2.4.50": ("dcmcjpeg", ("+eb", "-ho")),  # baseline (process 1), 8 bits
    "1.2.840.10008.1.2.4.51": ("dcmcjpeg", ("+ee", "-ho")),  # extended (processes 2 and 4), up to 12 bits
    "1.2.840.10008.1.2.4.57": ("dcmcjpeg", ("+el",)),   # lossless (process 14)
    "1.2.840.10008.1.2.4.70": ("dcmcjpeg", ("+e1",)),   # lossless, first-order prediction
    "1.2.840.10008.1.2.4.80": ("dcmcjpls", ("+el", "+pc", "+pz")),  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": ("dcmcjpls", ("+en", "+pc", "+pz")),  # JPEG-LS near-lossless
}

#: The BitsStored each lossy JPEG process is used for, as Orthanc: DCMTK would scale other images
#: to its 8 or 12 bits, which Orthanc refuses (and keeps the original transfer syntax).
BITS_STORED = {"1.2.840.10008.1.2.4.50": range(8, 9), "1.2.840.10008.1.2.4.51": range(1, 13)}

#: The tool that decodes each transfer syntax (to Explicit VR Little Endian).
DECODERS: dict[str, str] = {
    **{f"1.2.840.10008.1.2.4.{n}": "dcmdjpeg" for n in (50, 51, 53, 55, 57, 70)},
    "1.2.840.10008.1.2.4.80": "dcmdjpls",
    "1.2.840.10008.1.2.4.81": "dcmdjpls",
}

TIMEOUT = 120  # seconds: a frame of a few hundred megabytes takes a few seconds


class CodecFailed(Exception):
    """The codec is not installed, refused the file, or did not finish in time."""


def encode(data: bytes, transfer_syntax: str, bits_stored: int) -> bytes:
    """A DICOM file (uncompressed, little endian) written in ``transfer_syntax``, one of ``ENCODERS``."""
    if bits_stored not in BITS_STORED.get(transfer_syntax, range(bits_stored, bits_stored + 1)):
        raise CodecFailed(f"{bits_stored} bits per sample cannot be written in {transfer_syntax}")
    tool, options = ENCODERS[transfer_syntax]
    return _run(tool, options, data)


def decode(data: bytes, transfer_syntax: str) -> bytes:
    """A DICOM file of ``transfer_syntax`` (one of ``DECODERS``) in Explicit VR Little Endian."""
    return _run(DECODERS[transfer_syntax], (), data)


def _run(tool: str, options: tuple[str, ...], data: bytes) -> bytes:
    executable = shutil.which(tool)
    if executable is None:
        raise CodecFailed(f"{tool} is not installed (package dcmtk)")
    with tempfile.TemporaryDirectory(prefix="luabroker-dcmtk-") as work:
        source, target = Path(work) / "in.dcm", Path(work) / "out.dcm"
        source.write_bytes(data)
        try:
            run = subprocess.run([executable, "--log-level", "error", *options, str(source), str(target)],
                                 capture_output=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise CodecFailed(f"{tool} did not finish within {TIMEOUT} s") from None
        if run.returncode != 0 or not target.exists():
            message = run.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CodecFailed(f"{tool} failed: {message[-1] if message else f'exit status {run.returncode}'}")
        return target.read_bytes()
