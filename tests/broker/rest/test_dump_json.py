"""``dump_json`` writes exactly what ``json.dumps`` writes in Orthanc's style, for every kind of value,
plain (its own writer) or not (the fallback)."""
from __future__ import annotations

import enum
import json
import random
from typing import Any

import pytest

from broker.rest.types import dump_json


def reference(value: Any) -> bytes:
    return json.dumps(value, indent=3, separators=(",", " : "), sort_keys=True, ensure_ascii=False).encode()


class Number(int, enum.Enum):
    ONE = 1


class Text(str, enum.Enum):
    X = "x"


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice(["", 'a"b', "é\u2028\x00\x1f", "\\", "日本", "x" * 300])
    if kind == 1:
        return rng.choice([None, True, False, Number.ONE, Text.X])
    if kind == 2:
        return rng.choice([0, -1, 2**70, 3])
    if kind == 3:
        return rng.choice([0.1, -2.5e300, 1e-7, float("nan"), float("inf"), 3.0])
    if kind == 5:
        return rng.choice([[], {}, ()])
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return tuple(random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    if kind == 8:
        return {rng.choice(["a", "b", "B", "é", "0008,0005", "", "z"]): random_value(rng, depth + 1)
                for _ in range(rng.randrange(5))}
    return "s"


def test_random_values_are_written_as_json_dumps_writes_them() -> None:
    rng = random.Random(12)
    for _ in range(5000):
        value = random_value(rng)
        assert dump_json(value) == reference(value), value


@pytest.mark.parametrize("value", [{1: "a"}, {"a": {2: 3}}, {Text.X: 1}, {"k": [1, {"x": None}]}, ["a", b"".decode()]])
def test_values_outside_the_plain_writer_are_written_alike(value: Any) -> None:
    assert dump_json(value) == reference(value)


def test_a_value_json_cannot_write_fails_as_json_dumps() -> None:
    with pytest.raises(TypeError):
        dump_json({"a": object()})
