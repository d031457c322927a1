"""The append-with-overflow row buffer under the tick's events and violations.

Kernels append through `append(buf, c0, c1, c2, c3)` on the buffer's `view` (a named tuple of
its four columns and ``counts`` = [rows, overflow]); a full buffer counts the row instead of
writing it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import numpy as np
from numba import njit

from sim.scalars import Num
from sim.tuples import tuple_class

_N: Final = 0
_OVERFLOW: Final = 1


@njit(cache=True)
def append(buf: Any, c0: Num, c1: Num, c2: Num, c3: Num) -> None:
    """Append one row, or count it in counts[1] when the buffer is full."""
    counts = buf.counts
    n = counts[0]
    if n < buf[0].shape[0]:
        buf[0][n] = c0
        buf[1][n] = c1
        buf[2][n] = c2
        buf[3][n] = c3
        counts[0] = n + 1
    else:
        counts[1] += 1


class RowBuffer:
    """Preallocated columns; `n` rows are valid, `overflow` were dropped since `clear()`."""

    columns: ClassVar[tuple[tuple[str, type], ...]] = ()

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        arrays: list[np.ndarray] = [np.zeros(self.capacity, dtype=dt) for _, dt in self.columns]
        for (name, _), arr in zip(self.columns, arrays, strict=True):
            setattr(self, name, arr)
        self.counts = np.zeros(2, dtype=np.int64)  # [n, overflow]; written by kernels
        cls: Any = tuple_class([n for n, _ in self.columns] + ["counts"])
        self.view: Any = cls(*arrays, self.counts)

    @property
    def n(self) -> int:
        return int(self.counts[_N])

    @property
    def overflow(self) -> int:
        return int(self.counts[_OVERFLOW])

    def clear(self) -> None:
        self.counts[:] = 0

    def rows(self) -> list[tuple[Any, ...]]:
        """The valid rows as tuples of Python scalars (tools, tests, policy; not the tick path)."""
        n = self.n
        return list(zip(*(self.view[c][:n].tolist() for c in range(len(self.columns))), strict=True))
