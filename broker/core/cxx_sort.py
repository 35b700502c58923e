"""``std::sort`` as GCC's libstdc++ runs it: introsort, then a final insertion sort.

``std::sort`` is not stable, so where Orthanc sorts with it, the order of elements that compare equal
is the one this algorithm happens to leave (Orthanc 1.10 on Debian is built with GCC). Python's
``sorted`` keeps them in their first order instead, which is the same up to 16 elements only (below
that threshold libstdc++ does a plain insertion sort). This is a step-by-step copy of
``bits/stl_algo.h`` and ``bits/stl_heap.h``, so that such ties come out in Orthanc's order.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Less = Callable[[T, T], bool]

_THRESHOLD = 16  # libstdc++'s _S_threshold


def cxx_sort(items: list[T], less: Less[T]) -> None:
    """Sort ``items`` in place as ``std::sort(begin, end, less)`` does."""
    if len(items) > 1:
        _introsort_loop(items, 0, len(items), 2 * (len(items).bit_length() - 1), less)
        _final_insertion_sort(items, 0, len(items), less)


def _introsort_loop(a: list[T], first: int, last: int, depth_limit: int, less: Less[T]) -> None:
    while last - first > _THRESHOLD:
        if depth_limit == 0:
            _heap_sort(a, first, last, less)
            return
        depth_limit -= 1
        cut = _partition_pivot(a, first, last, less)
        _introsort_loop(a, cut, last, depth_limit, less)
        last = cut


def _partition_pivot(a: list[T], first: int, last: int, less: Less[T]) -> int:
    """The median of the second, middle and last elements moved to ``first``, then a partition."""
    mid = first + (last - first) // 2
    x, y, z = first + 1, mid, last - 1
    if less(a[x], a[y]):
        median = y if less(a[y], a[z]) else z if less(a[x], a[z]) else x
    else:
        median = x if less(a[x], a[z]) else z if less(a[y], a[z]) else y
    a[first], a[median] = a[median], a[first]
    return _unguarded_partition(a, first + 1, last, first, less)


def _unguarded_partition(a: list[T], first: int, last: int, pivot: int, less: Less[T]) -> int:
    while True:
        while less(a[first], a[pivot]):
            first += 1
        last -= 1
        while less(a[pivot], a[last]):
            last -= 1
        if not first < last:
            return first
        a[first], a[last] = a[last], a[first]
        first += 1


def _final_insertion_sort(a: list[T], first: int, last: int, less: Less[T]) -> None:
    if last - first > _THRESHOLD:
        _insertion_sort(a, first, first + _THRESHOLD, less)
        for i in range(first + _THRESHOLD, last):
            _unguarded_linear_insert(a, i, less)
    else:
        _insertion_sort(a, first, last, less)


def _insertion_sort(a: list[T], first: int, last: int, less: Less[T]) -> None:
    for i in range(first + 1, last):
        if less(a[i], a[first]):
            a[first:i + 1] = [a[i], *a[first:i]]
        else:
            _unguarded_linear_insert(a, i, less)


def _unguarded_linear_insert(a: list[T], last: int, less: Less[T]) -> None:
    value = a[last]
    while less(value, a[last - 1]):
        a[last] = a[last - 1]
        last -= 1
    a[last] = value


def _heap_sort(a: list[T], first: int, last: int, less: Less[T]) -> None:
    """``std::__partial_sort(first, last, last)``: make a heap, then pop it to the end."""
    length = last - first
    for parent in range((length - 2) // 2, -1, -1):
        _adjust_heap(a, first, parent, length, a[first + parent], less)
    while length > 1:
        length -= 1
        value = a[first + length]
        a[first + length] = a[first]
        _adjust_heap(a, first, 0, length, value, less)


def _adjust_heap(a: list[T], base: int, hole: int, length: int, value: T, less: Less[T]) -> None:
    top = child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if less(a[base + child], a[base + child - 1]):
            child -= 1
        a[base + hole] = a[base + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[base + hole] = a[base + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and less(a[base + parent], value):
        a[base + hole] = a[base + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[base + hole] = value
