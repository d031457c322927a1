"""Input pacing validators every game shares: input rate and time discrepancy (the speed hack).

Per player entity one row of ``fp_pace`` (int64, PACE_COLS per slot):

- input rate, as a GCRA (the leaky bucket as one number): a client may send at most one input per
  tick on average with a burst credit of ``burst`` ticks; ``tat`` is the theoretical arrival tick.
  Inputs bunch up after a network stall, and the burst credit is what absorbs that.
- time discrepancy, the way Unreal's ``bMovementTimeDiscrepancyDetection`` does it: every input
  carries the client's clock (``client_tick``); the client time an input claims (its advance over
  the previous input's) minus the server ticks that really passed is summed, clamped below at
  ``-margin`` (a lagging client is forgiven, not credited without bound) and flagged above
  ``+margin``. Network jitter only moves this sum by the change in one-way delays, so a margin of
  1.5 s tolerates bursts of delay well beyond the 150 ± 50 ms the fair-play tests use; a client
  whose clock runs 2x fast is flagged within about two margins.

A flagged input is refused. After a time flag the discrepancy is held at the margin, so a client
that keeps running fast is flagged on every input and one that stops recovers.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Int
from sim.violations import V_INPUT_RATE, V_TIME
from sim.world import World

PACE_COLS: Final = 4
_TAT: Final = 0  # input-rate GCRA: theoretical arrival tick
_CT: Final = 1  # client tick of the previous input (-1: none yet)
_CT_AT: Final = 2  # server tick at which it arrived
DISC: Final = 3  # summed discrepancy, ticks (read by bench.fairplay)

INPUT_BURST_S: Final = 1.0  # burst credit of the input rate, seconds of inputs
TIME_MARGIN_S: Final = 1.5  # time discrepancy allowed either way, seconds


def pace_limits(tick_rate: int) -> tuple[int, int]:
    """(burst, margin) in ticks for a game running at `tick_rate`."""
    return max(1, round(INPUT_BURST_S * tick_rate)), max(1, round(TIME_MARGIN_S * tick_rate))


def add_pace(world: World) -> np.ndarray:
    """The pacing rows of every entity slot, reset (used at creation and for older worlds)."""
    pace = world.add("fp_pace", np.int64, world.capacity * PACE_COLS)
    pace[_CT::PACE_COLS] = -1
    return pace


def reset_pace(world: World, slot: int) -> None:
    """A fresh ship: no pacing history (its first input sets the clock baseline)."""
    pace = world.arrays["fp_pace"]
    r = slot * PACE_COLS
    pace[r : r + PACE_COLS] = (0, -1, 0, 0)


@njit(cache=True)
def check_pace(slot: Int, ct: Int, now: Int, pace: np.ndarray, burst: Int, margin: Int) -> tuple[int, float, float]:
    """(violation kind or 0, measured value, limit) for one input of the player at `slot`.

    Input rate first: an input over the rate is refused before it can claim any time.
    """
    r = slot * PACE_COLS
    tat = pace[r + _TAT]
    if tat < now:
        tat = now
    if tat - now >= burst:  # the burst credit is spent
        return V_INPUT_RATE, float(tat - now + 1), float(burst)
    pace[r + _TAT] = tat + 1
    last = pace[r + _CT]
    ct = np.int64(ct)
    if last >= 0:
        claimed = ct - last
        if claimed < 0:  # the client's clock went back (a resync): it claims nothing
            claimed = 0
        d = pace[r + DISC] + claimed - (now - pace[r + _CT_AT])
        if d < -margin:
            d = -margin
        pace[r + _CT] = ct
        pace[r + _CT_AT] = now
        if d > margin:
            pace[r + DISC] = margin
            return V_TIME, float(d), float(margin)
        pace[r + DISC] = d
        return 0, 0.0, 0.0
    pace[r + _CT] = ct
    pace[r + _CT_AT] = now
    return 0, 0.0, 0.0
