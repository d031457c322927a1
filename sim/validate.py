"""The input rules every game shares, as kernel helpers, and the default input system.

A game's input system walks the batch and, per input, calls `admit` (live player, finite move,
fresh seq, |move| <= 1, pacing: refused inputs get their EV_REFUSED and, where the refusal is
evidence, a violation), then either `refuse` it for a reason of its own or `accept` it, which
marks it accepted, records its seq and applies the game's move binding (sim/spec.py). An input is
atomic: refused means no effect at all.

    for i in range(inp.n):
        slot = admit(i, inp, gate, ev, vio)
        if slot < 0:
            continue
        ...                                   # the game's own checks: refuse(i, inp, ev, reason)
        accept(i, slot, inp, gate)

`gate` (bound by the engine) holds what these rules read and write: the entity table, `last_seq`,
the pacing rows and limits, the batch's move columns and the move binding's target arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from sim.entities import resolve
from sim.events import EV_REFUSED, REF_DEAD, REF_NONFINITE, REF_RANGE, REF_STALE_SEQ, REF_TOO_FAST, emit
from sim.pacing import check_pace
from sim.scalars import Int
from sim.violations import V_THRUST, violate

_ONE = np.float32(1.0)


@njit(cache=True)
def admit(i: Int, inp: Any, gate: Any, ev: Any, vio: Any) -> int:
    """Slot of input i's player when the shared rules admit it, else -1 (refusal emitted)."""
    eid = inp.eid[i]
    slot = resolve(eid, gate.alive, gate.generation)
    reason = 0
    if slot < 0 or gate.is_player[slot] == 0:
        reason = REF_DEAD
    else:
        mx = gate.mx[i]
        my = gate.my[i]
        if not (np.isfinite(mx) and np.isfinite(my)):
            reason = REF_NONFINITE
        elif inp.seq[i] <= gate.last_seq[slot]:
            reason = REF_STALE_SEQ
        elif mx * mx + my * my > _ONE:  # exactly in float32: no tolerance
            reason = REF_RANGE
            mag = np.sqrt(np.float64(mx) * np.float64(mx) + np.float64(my) * np.float64(my))
            violate(vio, V_THRUST, eid, mag, 1.0)
        else:
            kind, value, limit = check_pace(slot, inp.client_tick[i], inp.now, gate.pace, gate.burst, gate.margin)
            if kind != 0:
                violate(vio, kind, eid, value, limit)
                reason = REF_TOO_FAST
    if reason != 0:
        inp.accepted[i] = 0
        emit(ev, EV_REFUSED, eid, i, reason)
        return -1
    return slot


@njit(cache=True)
def refuse(i: Int, inp: Any, ev: Any, reason: Int) -> None:
    """Refuse input i for a game rule of its own (nothing of it takes effect)."""
    inp.accepted[i] = 0
    emit(ev, EV_REFUSED, inp.eid[i], i, reason)


@njit(cache=True)
def accept(i: Int, slot: Int, inp: Any, gate: Any) -> None:
    """Input i takes effect: accepted, its seq recorded, its move applied."""
    inp.accepted[i] = 1
    gate.last_seq[slot] = inp.seq[i]
    if gate.scale != 0:  # a move binding: velocity = in * speed, or thrust = in * 1
        gate.ix[slot] = gate.mx[i] * gate.scale
        gate.iy[slot] = gate.my[i] * gate.scale


@njit(cache=True)
def admit_all(inp: Any, gate: Any, ev: Any, vio: Any) -> None:
    """The input system of a game with no rules of its own: the shared rules, then the move."""
    for i in range(inp.n):
        slot = admit(i, inp, gate, ev, vio)
        if slot >= 0:
            accept(i, slot, inp, gate)
