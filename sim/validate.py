"""Input validation shared by every game's input kernel (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.entities import resolve
from sim.events import REF_DEAD, REF_NONFINITE, REF_RANGE, REF_STALE_SEQ, REF_TOO_FAST
from sim.pacing import check_pace
from sim.scalars import Float, Int
from sim.violations import V_THRUST, violate

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


@njit(cache=True)
def validate_input(
    eid: Int,
    seq: Int,
    ct: Int,
    dx: Float,
    dy: Float,
    now: Int,
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    last_seq: np.ndarray,
    pace: np.ndarray,
    burst: Int,
    margin: Int,
    v_kind: np.ndarray,
    v_eid: np.ndarray,
    v_value: np.ndarray,
    v_limit: np.ndarray,
    v_counts: np.ndarray,
) -> tuple[Int, int]:
    """`check_input` plus the shared validators: thrust beyond range and pacing (sim/pacing.py)
    raise violations; (slot, refusal reason) as `check_input`, REF_TOO_FAST for a pacing flag."""
    slot, reason = check_input(eid, seq, dx, dy, alive, generation, is_player, last_seq)
    if reason == REF_RANGE:
        mag = np.sqrt(np.float64(dx) * np.float64(dx) + np.float64(dy) * np.float64(dy))
        violate(v_kind, v_eid, v_value, v_limit, v_counts, V_THRUST, eid, mag, 1.0)
    elif reason == 0:
        kind, value, limit = check_pace(slot, ct, now, pace, burst, margin)
        if kind != 0:
            violate(v_kind, v_eid, v_value, v_limit, v_counts, kind, eid, value, limit)
            reason = REF_TOO_FAST
    return slot, reason
