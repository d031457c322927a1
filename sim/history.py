"""Lag compensation: a per-tick ring of entity positions, part of the world, and the rewind rule.

A game that declares `LagComp` (sim/spec.py) gets a ring recording x, y of the entities of one
slot range ``[lo, hi)`` (its NPCs or its players) at the end of every tick, so that a targeted
action can be checked against where its target was at the tick the client was displaying. Kernels
read it as `hist` (`hist_at`) and ask `rewind_ok` whether an input may claim its tick at all: at
most the game's ``max_rewind``, and at most the rewind its connection's measured latency allows
(the engine's `bound` column of the input batch: RTT/2 + interpolation delay + a jitter margin,
see engine/latency.py; journaled, so a replay refuses and accepts exactly what the server did).
The ring lives in ``world.arrays`` (so snapshots, replay and the state hash cover it) as:

- ``hist_x``, ``hist_y`` (float32, ``rows * n``): row ``r`` holds tick ``hist_tick[r]``; entity
  ``lo + j`` is at index ``r * n + j``. Row of tick ``t`` = ``t % rows``.
- ``hist_tick`` (int64, ``rows``): the tick a row holds, -1 = empty.
- ``hist_id`` (uint32, ``n``): the entity id occupying slot ``lo + j`` when last recorded (0 = empty).
- ``hist_since`` (int64, ``n``): the first recorded tick of that occupant. Rows older than it belong
  to a previous occupant (or none), so a lookup can never mix two entities sharing a slot. This
  stands in for per-row alive/generation columns at O(n) instead of O(rows·n) memory.

Cost: ``8·rows·n + 12·n`` bytes and one pass over ``n`` entities per tick.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numba import njit

from sim.entities import SLOT_MASK, make_id
from sim.scalars import Int
from sim.tuples import tuple_class
from sim.world import World

HISTORY_MIN_SECONDS: Final = 0.5
HISTORY_ARRAYS: Final = ("hist_id", "hist_since", "hist_tick", "hist_x", "hist_y")
_HIST: Any = tuple_class(["x", "y", "tick", "id", "since", "lo"])


def history_rows(tick_rate: int, max_rewind: int, min_seconds: float = HISTORY_MIN_SECONDS) -> int:
    """Ring length: the smallest power of two covering ``min_seconds`` and ``max_rewind + 1`` ticks."""
    need = max(math.ceil(min_seconds * tick_rate), int(max_rewind) + 1, 1)
    return 1 << (need - 1).bit_length()


def add_history(world: World, lo: int, hi: int, rows: int) -> None:
    """Allocate the ring for slots ``[lo, hi)`` with ``rows`` ticks and record the current tick."""
    n = hi - lo
    world.add("hist_x", np.float32, rows * n)
    world.add("hist_y", np.float32, rows * n)
    world.add("hist_tick", np.int64, rows, fill=-1)
    world.add("hist_id", np.uint32, n)
    world.add("hist_since", np.int64, n)
    a = world.arrays
    record_history(
        np.int64(world.tick), np.int64(lo), a["alive"], a["generation"], a["x"], a["y"],
        a["hist_x"], a["hist_y"], a["hist_tick"], a["hist_id"], a["hist_since"],
    )  # fmt: skip


@njit(cache=True)
def record_history(
    tick: Int,
    lo: Int,
    alive: np.ndarray,
    generation: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    hist_x: np.ndarray,
    hist_y: np.ndarray,
    hist_tick: np.ndarray,
    hist_id: np.ndarray,
    hist_since: np.ndarray,
) -> None:
    """Record positions of slots ``[lo, lo + n)`` as tick ``tick`` (overwrites the row of ``tick - rows``)."""
    n = hist_id.shape[0]
    rows = hist_tick.shape[0]
    r = tick % rows
    base = r * n
    hist_tick[r] = tick
    hist_x[base : base + n] = x[lo : lo + n]
    hist_y[base : base + n] = y[lo : lo + n]
    for j in range(n):
        s = lo + j
        eid = np.uint32(make_id(s, np.int64(generation[s]))) if alive[s] != 0 else np.uint32(0)
        if eid != hist_id[j]:
            hist_id[j] = eid
            hist_since[j] = tick


@njit(cache=True)
def lookup_history(
    eid: Int,
    tick: Int,
    lo: Int,
    hist_x: np.ndarray,
    hist_y: np.ndarray,
    hist_tick: np.ndarray,
    hist_id: np.ndarray,
    hist_since: np.ndarray,
) -> tuple[bool, np.float32, np.float32]:
    """(found, x, y) of entity ``eid`` at ``tick``; found is False when the ring does not hold that
    tick, the id is not (or no longer) the occupant of its slot, or it was not alive yet then."""
    n = hist_id.shape[0]
    rows = hist_tick.shape[0]
    zero = np.float32(0.0)
    j = (np.int64(eid) & SLOT_MASK) - lo
    if eid == 0 or j < 0 or j >= n or tick < 0:
        return False, zero, zero
    if np.int64(hist_id[j]) != np.int64(eid) or tick < hist_since[j]:
        return False, zero, zero
    r = tick % rows
    if hist_tick[r] != tick:
        return False, zero, zero
    return True, hist_x[r * n + j], hist_y[r * n + j]


def hist_view(world: World, lo: int) -> Any:
    """The ring as kernels take it (`hist`): x, y, tick, id, since and the first slot `lo`."""
    a = world.arrays
    return _HIST(a["hist_x"], a["hist_y"], a["hist_tick"], a["hist_id"], a["hist_since"], np.int64(lo))


@njit(cache=True)
def hist_at(hist: Any, eid: Int, tick: Int) -> tuple[bool, np.float32, np.float32]:
    """(found, x, y) of entity ``eid`` at ``tick`` (`lookup_history` on the bound ring)."""
    return lookup_history(eid, tick, hist.lo, hist.x, hist.y, hist.tick, hist.id, hist.since)


@njit(cache=True)
def rewind_ok(i: Int, inp: Any, max_rewind: Int) -> bool:
    """May input i be judged at its client tick? Not in the future, and not further back than
    ``max_rewind`` nor than its connection's bound (inp.bound, 0 = not measured)."""
    ct = np.int64(inp.client_tick[i])
    limit = np.int64(max_rewind)
    bound = np.int64(inp.bound[i])
    if 0 < bound < limit:
        limit = bound
    return ct <= inp.now and inp.now - ct <= limit


def position_at(world: World, eid: int, tick: int, lo: int) -> tuple[float, float] | None:
    """Python convenience (tests, tools): where ``eid`` was at ``tick``, or None."""
    a = world.arrays
    ok, x, y = lookup_history(
        np.int64(eid), np.int64(tick), np.int64(lo),
        a["hist_x"], a["hist_y"], a["hist_tick"], a["hist_id"], a["hist_since"],
    )  # fmt: skip
    return (float(x), float(y)) if ok else None
