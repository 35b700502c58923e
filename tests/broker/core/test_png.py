"""``broker.core.png``: what it writes decodes to the pixels given (byte equality with libpng's output is
checked against a real Orthanc in tests/broker/rest/test_preview.py and test_frames.py)."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from broker.core import png


@pytest.mark.parametrize("shape,dtype", [((1, 1), np.uint8), ((2, 3), np.uint8), ((7, 5, 3), np.uint8),
                                         ((300, 200), np.uint8), ((64, 90, 3), np.uint8), ((3, 2), np.uint16),
                                         ((129, 257), np.uint16)])
def test_decodes_to_the_pixels_given(shape: tuple[int, ...], dtype: type) -> None:
    pixels = np.random.default_rng(len(shape) * 1000 + shape[0]).integers(0, np.iinfo(dtype).max, shape, dtype)
    pixels[: shape[0] // 2] //= 3  # smooth and noisy rows, so that every filter gets picked
    decoded = np.asarray(Image.open(io.BytesIO(png.encode(pixels))))
    assert decoded.shape == pixels.shape
    assert (decoded.astype(np.int64) == pixels.astype(np.int64)).all()


def test_a_small_image_claims_the_smallest_window() -> None:
    data = png.encode(np.zeros((2, 2), np.uint8))
    stream = data[41:]  # signature (8) and IHDR (25), then the IDAT's length and type
    assert stream[0] == 0x08  # CINFO 0: a 256-byte window, as libpng's optimize_cmf writes it
    assert (stream[0] << 8 | stream[1]) % 31 == 0
    assert zlib.decompress(stream[:-12 - 4]) == b"\x00\x00\x00" * 2  # no filter: rows of zeros


def test_sixteen_bits_end_twice_as_in_orthanc() -> None:
    data = png.encode(np.zeros((2, 2), np.uint16))
    assert data.count(b"IEND") == 2 and data.endswith(b"IEND\xaeB`\x82")
    assert png.encode(np.zeros((2, 2), np.uint8)).count(b"IEND") == 1
