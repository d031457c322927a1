"""Events out of a tick, as preallocated arrays; `emit` is the kernel-side writer."""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Int
from sim.violations import ViolationBuffer

EV_ACHIEVEMENT: Final = 1  # a = achievement id
EV_BALANCE: Final = 2  # a = resource id, b = new balance
EV_REFUSED: Final = 3  # a = input index, b = reason code
EV_BUILT: Final = 4  # a = building count

# refusal reason codes (EV_REFUSED.b)
REF_DEAD: Final = 1  # stale/dead eid, or not a player
REF_NONFINITE: Final = 2
REF_STALE_SEQ: Final = 3  # seq <= last accepted seq
REF_RANGE: Final = 4  # dx² + dy² > 1
REF_UNAFFORDABLE: Final = 5
REF_NO_TARGET: Final = 6
REF_BAD_ACTION: Final = 7
# 8, 9: startales' SCAN (REF_REWIND, REF_OUT_OF_REACH); 11, 12: its transfers and claims
REF_TOO_FAST: Final = 10  # input rate or client clock beyond the pacing limits (sim/pacing.py)

_N: Final = 0
_OVERFLOW: Final = 1


@njit(cache=True)
def emit(
    ev_kind: np.ndarray,
    ev_eid: np.ndarray,
    ev_a: np.ndarray,
    ev_b: np.ndarray,
    counts: np.ndarray,
    kind: Int,
    eid: Int,
    a: Int,
    b: Int,
) -> None:
    """Append one event, or count it in counts[1] when the buffer is full."""
    n = counts[0]
    if n < ev_kind.shape[0]:
        ev_kind[n] = kind
        ev_eid[n] = eid
        ev_a[n] = a
        ev_b[n] = b
        counts[0] = n + 1
    else:
        counts[1] += 1


class EventBuffer:
    """Preallocated event arrays; `n` events are valid, `overflow` were dropped since `clear()`.

    `violations` is the tick's violation buffer (sim/violations.py), cleared with it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.violations = ViolationBuffer(capacity)
        self.kind = np.zeros(capacity, dtype=np.int32)
        self.eid = np.zeros(capacity, dtype=np.uint32)
        self.a = np.zeros(capacity, dtype=np.int64)
        self.b = np.zeros(capacity, dtype=np.int64)
        self.counts = np.zeros(2, dtype=np.int64)  # [n, overflow]; written by kernels

    @property
    def n(self) -> int:
        return int(self.counts[_N])

    @property
    def overflow(self) -> int:
        return int(self.counts[_OVERFLOW])

    def clear(self) -> None:
        self.counts[:] = 0
        self.violations.counts[:] = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(kind, eid, a, b, counts): the argument tuple kernels take."""
        return self.kind, self.eid, self.a, self.b, self.counts

    def rows(self) -> list[tuple[int, int, int, int]]:
        """(kind, eid, a, b) per event, for tests and tools (not for the tick path)."""
        n = self.n
        return [
            (int(k), int(e), int(a), int(b))
            for k, e, a, b in zip(self.kind[:n], self.eid[:n], self.a[:n], self.b[:n], strict=True)
        ]
