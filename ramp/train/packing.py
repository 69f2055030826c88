"""Packing whole conversations into fixed-length rows (best-fit decreasing), never cutting one.

A row holds ``capacity`` tokens (the training sequence length + 1: inputs are ``row[:-1]``, labels
``row[1:]``). A conversation longer than ``capacity`` is not packed and is reported, never cut.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Packing:
    rows: list[list[int]]  # indices into the input, per row, in insertion order
    too_long: list[int]  # indices of items longer than the capacity
    capacity: int
    tokens: int  # packed (non-pad) tokens

    @property
    def efficiency(self) -> float:
        """Non-pad tokens / all tokens of the packed rows."""
        return self.tokens / (len(self.rows) * self.capacity) if self.rows else 0.0


def pack_best_fit(lengths: Sequence[int], capacity: int) -> Packing:
    """Best-fit decreasing: longest first (ties by index), each into the fullest row it fits.

    Deterministic: the same lengths give the same rows. O(n log n) searches over the open rows' free space.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row), sorted
    too_long: list[int] = []
    tokens = 0
    for i in order:
        size = lengths[i]
        if size > capacity:
            too_long.append(i)
            continue
        if size < 1:
            raise ValueError(f"item {i} is empty")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            space, row = free.pop(at)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        tokens += size
        if space - size > 0:
            bisect.insort(free, (space - size, row))
    return Packing(rows=rows, too_long=sorted(too_long), capacity=capacity, tokens=tokens)
