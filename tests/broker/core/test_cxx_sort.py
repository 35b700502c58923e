"""``cxx_sort`` leaves ties in the order libstdc++'s ``std::sort`` leaves them: compared with the real
one, compiled with g++, on random lists with ties and on inputs that drive introsort to its heap sort."""
from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

import broker.core.cxx_sort as cxx_sort_module
from broker.core.cxx_sort import cxx_sort

# Reads "n k1 ... kn" lines; prints the original positions in the order std::sort leaves them.
SORTER = """
#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>
int main() {
  int n;
  while (std::scanf("%d", &n) == 1) {
    std::vector<std::pair<long, int>> v(n);
    for (int i = 0; i < n; i++) { std::scanf("%ld", &v[i].first); v[i].second = i; }
    std::sort(v.begin(), v.end(), [](const std::pair<long, int>& a, const std::pair<long, int>& b) {
      return a.first < b.first; });
    for (int i = 0; i < n; i++) std::printf("%d ", v[i].second);
    std::printf("\\n");
  }
}
"""


@pytest.fixture(scope="module")
def std_sort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    directory = tmp_path_factory.mktemp("std_sort")
    (directory / "sort.cpp").write_text(SORTER)
    subprocess.run([compiler, "-O2", "-o", str(directory / "sort"), str(directory / "sort.cpp")], check=True)
    return directory / "sort"


def ours(keys: list[int]) -> list[int]:
    items = list(enumerate(keys))
    cxx_sort(items, lambda a, b: a[1] < b[1])
    return [position for position, _ in items]


def theirs(program: Path, cases: list[list[int]]) -> list[list[int]]:
    lines = "".join(f"{len(keys)} {' '.join(map(str, keys))}\n" for keys in cases)
    output = subprocess.run([str(program)], input=lines, capture_output=True, text=True, check=True).stdout
    return [[int(position) for position in line.split()] for line in output.splitlines()]


def quicksort_killer(size: int) -> list[int]:
    """McIlroy's adversary ("A killer adversary for quicksort", 1999) run against ``cxx_sort``: keys
    that make every partition lopsided, so that introsort gives up and heap-sorts."""
    gas = size
    values, frozen, candidate = [gas] * size, [0], [0]

    def less(x: int, y: int) -> bool:
        if values[x] == gas and values[y] == gas:
            values[x if x == candidate[0] else y] = frozen[0]
            frozen[0] += 1
        if values[x] == gas:
            candidate[0] = x
        elif values[y] == gas:
            candidate[0] = y
        return values[x] < values[y]

    cxx_sort(list(range(size)), less)
    return values


def test_ties_come_out_in_std_sorts_order(std_sort: Path) -> None:
    rng = random.Random(1)
    cases = [[rng.randrange(distinct) for _ in range(size)]
             for size in [*range(40), 100, 257, 1000] for distinct in (1, 2, 3, 10, max(size, 1))]
    cases += [list(range(200)), list(range(200, 0, -1)), [i % 7 for i in range(200)]]
    assert [ours(keys) for keys in cases] == theirs(std_sort, cases)


def test_heap_sort_fallback_as_std_sort(std_sort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heap_sorts = []
    heap_sort = cxx_sort_module._heap_sort
    monkeypatch.setattr(cxx_sort_module, "_heap_sort", lambda *args: heap_sorts.append(1) or heap_sort(*args))
    cases = [quicksort_killer(size) for size in (100, 500, 2000)]
    assert heap_sorts
    assert [ours(keys) for keys in cases] == theirs(std_sort, cases)
