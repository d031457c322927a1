"""Input validation shared by every game's input kernel (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.entities import resolve
from sim.events import REF_DEAD, REF_NONFINITE, REF_RANGE, REF_STALE_SEQ
from sim.scalars import Float, Int

_ONE = np.float32(1.0)


@njit(cache=True)
def check_input(
    eid: Int,
    seq: Int,
    dx: Float,
    dy: Float,
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    last_seq: np.ndarray,
) -> tuple[Int, int]:
    """(slot, 0) for an input the common rules accept, else (slot or -1, refusal reason).

    Rules, in order: live player id; finite dx, dy; seq > last accepted seq; dx²+dy² <= 1
    compared exactly in float32.
    """
    slot = resolve(eid, alive, generation)
    if slot < 0 or is_player[slot] == 0:
        return -1, REF_DEAD
    if not (np.isfinite(dx) and np.isfinite(dy)):
        return slot, REF_NONFINITE
    if seq <= last_seq[slot]:
        return slot, REF_STALE_SEQ
    if dx * dx + dy * dy > _ONE:
        return slot, REF_RANGE
    return slot, 0
