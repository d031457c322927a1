"""Events out of a tick: kinds every game shares, refusal reasons, and the buffer kernels emit into.

Kernels write with `emit(ev, kind, eid, a, b)` where `ev` is `EventBuffer.view`; a game numbers its
own event kinds from 4 up (and names them in its spec, so clients can too).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from sim.rows import RowBuffer, append
from sim.violations import ViolationBuffer

EV_ACHIEVEMENT: Final = 1  # a = achievement id
EV_BALANCE: Final = 2  # a = resource id, b = new balance
EV_REFUSED: Final = 3  # a = input index, b = reason code
SHARED_EVENTS: Final = {EV_ACHIEVEMENT: "achievement", EV_BALANCE: "balance", EV_REFUSED: "refused"}

# refusal reason codes (EV_REFUSED.b); a game numbers its own from 16 up
REF_DEAD: Final = 1  # stale/dead eid, or not a player
REF_NONFINITE: Final = 2
REF_STALE_SEQ: Final = 3  # seq <= last accepted seq
REF_RANGE: Final = 4  # |move|² > 1
REF_UNAFFORDABLE: Final = 5
REF_NO_TARGET: Final = 6
REF_BAD_ACTION: Final = 7
REF_REWIND: Final = 8  # a lag-compensated claim beyond the connection's rewind bound (sim/history.py)
REF_OUT_OF_REACH: Final = 9  # a lag-compensated target farther than the action reaches at that tick
REF_TOO_FAST: Final = 10  # input rate or client clock beyond the pacing limits (sim/pacing.py)
REF_COOLDOWN: Final = 13  # an action again before its cooldown ran out

# The one row writer, under the name kernels read best.
emit = append


class EventBuffer(RowBuffer):
    """The tick's events; `violations` (sim/violations.py) is cleared with it."""

    columns = (("kind", np.int32), ("eid", np.uint32), ("a", np.int64), ("b", np.int64))
    kind: np.ndarray
    eid: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.violations = ViolationBuffer(capacity)

    def clear(self) -> None:
        self.counts[:] = 0
        self.violations.counts[:] = 0
