"""The order of the slices of a series (``/series/{id}/ordered-slices``), as Orthanc 1.10's
``SliceOrdering`` computes it, from the index only (main tags and ``IndexInSeries``), never the files.

Two ways, the first that works wins:

1. **Positions**: when the series has an ``ImageOrientationPatient``, every instance an
   ``ImagePositionPatient`` and no instance an orientation that is not parallel to the series', the
   instances are sorted by their position projected on the series' normal. If no two of them are
   closer than 10 float epsilons along it, the series is a ``Volume``.
2. **IndexInSeries**: when every instance has one (its InstanceNumber or ImageIndex); a ``Sequence``.

Otherwise the answer is Orthanc's error ``CannotOrderSlices``. A single instance is always ordered.

Everything that decides an order is computed as Orthanc computes it, so that ties and near ties come out
the same: vectors in single precision (``float``), the parallelism test in double precision, values
read with ``boost::lexical_cast`` rules, and both sorts with libstdc++'s unstable ``std::sort``
(``broker.core.cxx_sort``). The second sort starts from what the first one left, as in Orthanc.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.core.cxx_sort import cxx_sort
from broker.core.metadata import MetadataType
from broker.core.store import ResourceView
from broker.errors import ErrorCode, OrthancError

Vector = tuple[np.float32, np.float32, np.float32]

_FLOAT_EPSILON = np.finfo(np.float32).eps
#: ``IsCloseToZero``: ``fabs(x) < 10.0 * std::numeric_limits<float>::epsilon()``, in double precision.
_CLOSE_TO_ZERO = 10.0 * float(_FLOAT_EPSILON)
#: The smallest gap between two slices of a volume: ``10.0f * epsilon``, in single precision.
_SLICE_GAP = np.float32(10.0) * _FLOAT_EPSILON
#: What ``lexical_cast<float>`` reads (after Orthanc strips the spaces): a decimal number, inf or nan.
_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", re.IGNORECASE)
_UNSIGNED = re.compile(r"([+-]?)([0-9]+)")
#: Frames listed at most. ``NumberOfFrames`` is what a file declares (up to 2**32 - 1 once read the way
#: Orthanc reads it), and each frame is a string of the answer: past this, the answer is refused.
MAX_SLICES = 1_000_000


def _floats(text: str | None, count: int) -> list[np.float32] | None:
    """Orthanc's ``TokenizeVector``: exactly ``count`` numbers separated by backslashes."""
    if text is None:
        return None
    tokens = [token.strip() for token in text.split("\\")]
    if len(tokens) != count or not all(_FLOAT.fullmatch(token) for token in tokens):
        return None
    values = [float(token) for token in tokens]
    with np.errstate(over="ignore"):
        result = [np.float32(value) for value in values]
    if any(math.isinf(single) and not math.isinf(value) for single, value in zip(result, values, strict=True)):
        return None  # out of the range of a float: lexical_cast fails
    return result


def _unsigned(text: str | None, bits: int) -> int | None:
    """``boost::lexical_cast`` to an unsigned integer: a sign is accepted, and a minus wraps around."""
    match = _UNSIGNED.fullmatch(text.strip()) if text is not None else None
    if match is None or int(match.group(2)) >= 1 << bits:
        return None
    value = int(match.group(2))
    return (-value) % (1 << bits) if match.group(1) == "-" else value


def _normal(orientation: str | None) -> Vector | None:
    """The cross product of the row and column cosines of ``ImageOrientationPatient``."""
    c = _floats(orientation, 6)
    if c is None:
        return None
    return c[1] * c[5] - c[2] * c[4], c[2] * c[3] - c[0] * c[5], c[0] * c[4] - c[1] * c[3]


def _parallel_or_opposite(u: Vector, v: Vector) -> bool:
    u1, u2, u3 = (float(x) for x in u)
    v1, v2, v3 = (float(x) for x in v)
    norms = math.sqrt(u1 * u1 + u2 * u2 + u3 * u3) * math.sqrt(v1 * v1 + v2 * v2 + v3 * v3)
    if abs(norms) < _CLOSE_TO_ZERO:
        return False
    cosine = (u1 * v1 + u2 * v2 + u3 * v3) / norms
    return abs(cosine - 1.0) < _CLOSE_TO_ZERO or abs(abs(cosine) - 1.0) < _CLOSE_TO_ZERO


@dataclass(frozen=True)
class Slice:
    """One instance as the ordering sees it."""

    instance_id: str
    position: Vector | None
    normal: Vector | None
    index_in_series: int | None
    frames: int

    @classmethod
    def of(cls, view: ResourceView) -> Slice:
        tags = view.main_tags
        position = _floats(tags.get("ImagePositionPatient"), 3)
        frames = _unsigned(tags.get("NumberOfFrames"), 32)
        return cls(view.public_id, (position[0], position[1], position[2]) if position else None,
                   _normal(tags.get("ImageOrientationPatient")),
                   _unsigned(view.metadata.get(MetadataType.INDEX_IN_SERIES), 64), 1 if frames is None else frames)

    def along(self, normal: Vector) -> np.float32:
        """The position projected on the normal, in single precision as Orthanc computes it."""
        assert self.position is not None
        p = self.position
        return normal[0] * p[0] + normal[1] * p[1] + normal[2] * p[2]


@dataclass(frozen=True)
class OrderedSlices:
    slices: list[Slice]
    is_volume: bool

    def to_json(self) -> dict[str, Any]:
        """Orthanc's answer: the instances' files, every frame, and per instance its frame range."""
        return {
            "Type": "Volume" if self.is_volume else "Sequence",
            "Dicom": [f"/instances/{s.instance_id}/file" for s in self.slices],
            "Slices": [f"/instances/{s.instance_id}/frames/{frame}" for s in self.slices for frame in range(s.frames)],
            "SlicesShort": [[s.instance_id, 0, s.frames] for s in self.slices],
        }


def _sort_by_position(slices: list[Slice], normal: Vector | None) -> bool:
    """``SortUsingPositions``: sorts ``slices`` when it can; true when they form a volume."""
    if normal is None or any(s.position is None for s in slices):
        return False
    if any(s.normal is not None and not _parallel_or_opposite(s.normal, normal) for s in slices):
        return False
    along = {s.instance_id: s.along(normal) for s in slices}
    cxx_sort(slices, lambda a, b: bool(along[a.instance_id] < along[b.instance_id]))
    gaps = [abs(along[b.instance_id] - along[a.instance_id]) for a, b in zip(slices, slices[1:], strict=False)]
    return not any(gap <= _SLICE_GAP for gap in gaps)  # Orthanc's test of a gap too small: NaN passes it


def order_slices(series: ResourceView, instances: list[ResourceView]) -> OrderedSlices:
    """The instances of ``series`` (in the index's order, as Orthanc lists a series' children), ordered."""
    slices = [Slice.of(view) for view in instances]
    if sum(s.frames for s in slices) > MAX_SLICES:
        raise OrthancError(ErrorCode.NOT_ENOUGH_MEMORY, f"The series {series.public_id} declares more than "
                                                        f"{MAX_SLICES} frames, more than this server lists")
    if len(slices) <= 1:
        return OrderedSlices(slices, False)
    if _sort_by_position(slices, _normal(series.main_tags.get("ImageOrientationPatient"))):
        return OrderedSlices(slices, True)
    if any(s.index_in_series is None for s in slices):
        raise OrthancError(ErrorCode.CANNOT_ORDER_SLICES, f"Unable to order the slices of series {series.public_id}")
    cxx_sort(slices, lambda a, b: a.index_in_series < b.index_in_series)  # type: ignore[operator]
    return OrderedSlices(slices, False)
