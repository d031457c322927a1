"""The input rules every game shares, applied by the engine around the game's input system.

Each tick the engine runs, over the whole batch in order:

1. `admit_inputs` — the shared rules: a live player, a finite move, a fresh seq (newer than its
   last accepted one and than any input before it in this batch), |move| <= 1, pacing
   (sim/pacing.py). An input they refuse gets its EV_REFUSED and, where the refusal is evidence,
   a violation; the others are admitted: `inp.slot[i]` is their player's slot (else -1) and
   `inp.accepted[i]` is 1.
2. the game's input system (`Game.on_inputs`), which reads `inp.slot`, applies what it accepts
   and `refuse`s what its own rules refuse:

       for i in range(inp.n):
           slot = inp.slot[i]
           if slot < 0:
               continue                  # refused by the shared rules
           ...                           # the game's checks: refuse(i, inp, ev, reason); continue
           ...                           # its effects

3. `apply_inputs` — every input still accepted takes effect for the engine: its seq becomes the
   player's last accepted one (what snapshots acknowledge) and the game's move binding applies it
   (velocity = move × speed, or thrust = move).

An input is atomic: refused by either side, nothing of it takes effect. The passes take plain
arrays: a numba call with a tuple of arrays per input costs more than the rules themselves.
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
def admit_inputs(
    n: Int,
    now: Int,
    eid: np.ndarray,
    seq: np.ndarray,
    client_tick: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    slot_out: np.ndarray,
    accepted: np.ndarray,
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    last_seq: np.ndarray,
    seen_seq: np.ndarray,
    seen_tick: np.ndarray,
    pace: np.ndarray,
    burst: Int,
    margin: Int,
    ev: Any,
    vio: Any,
) -> None:
    """Pass 1: the shared rules over inputs [0, n) in order (`seen_*`: scratch of this pass, per slot)."""
    for i in range(n):
        e = eid[i]
        slot = resolve(e, alive, generation)
        reason = 0
        if slot < 0 or is_player[slot] == 0:
            reason = REF_DEAD
        else:
            x, y = mx[i], my[i]
            newest = seen_seq[slot] if seen_tick[slot] == now else np.int64(last_seq[slot])
            if not (np.isfinite(x) and np.isfinite(y)):
                reason = REF_NONFINITE
            elif np.int64(seq[i]) <= newest:
                reason = REF_STALE_SEQ
            elif x * x + y * y > _ONE:  # exactly in float32: no tolerance
                reason = REF_RANGE
                violate(vio, V_THRUST, e, np.sqrt(np.float64(x) * np.float64(x) + np.float64(y) * np.float64(y)), 1.0)
            else:
                kind, value, limit = check_pace(slot, client_tick[i], now, pace, burst, margin)
                if kind != 0:
                    violate(vio, kind, e, value, limit)
                    reason = REF_TOO_FAST
        if reason != 0:
            slot_out[i] = -1
            accepted[i] = 0
            emit(ev, EV_REFUSED, e, i, reason)
        else:
            slot_out[i] = slot
            accepted[i] = 1
            seen_seq[slot] = seq[i]
            seen_tick[slot] = now


@njit(cache=True)
def apply_inputs(
    n: Int,
    seq: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    slot_in: np.ndarray,
    accepted: np.ndarray,
    last_seq: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    scale: np.float32,
) -> None:
    """Pass 3: accepted inputs, in order, record their seq and apply the move (ix = mx * scale)."""
    for i in range(n):
        if accepted[i] == 0:
            continue
        slot = slot_in[i]
        last_seq[slot] = seq[i]
        if scale != 0:
            ix[slot] = mx[i] * scale
            iy[slot] = my[i] * scale


@njit(cache=True)
def refuse(i: Int, inp: Any, ev: Any, reason: Int) -> None:
    """Refuse input i for a game rule of its own: nothing of it takes effect."""
    inp.accepted[i] = 0
    emit(ev, EV_REFUSED, inp.eid[i], i, reason)
