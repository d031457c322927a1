"""Startales' rules after movement, and the state validators that check what the rules produced.

Per player: distance, visits, harvest at the bounded rate, coalesced balance events, achievements
from state. Then the books: no ship faster than MAX_SPEED, no negative balance, and conservation —
deposits + balances + what left the world (ships that left, buildings) − what came in (restored
progress) must equal the genesis deposits every tick. A state violation means a bug or an exploit
in the rules, not a cheating input; it is raised once (the books are rebased) and logged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from sim.entities import make_id
from sim.events import EV_ACHIEVEMENT, EV_BALANCE, emit
from sim.games.startales.constants import (
    ACH_BUILDER,
    ACH_BUILDINGS,
    ACH_DISTANCE,
    ACH_EXPLORER,
    ACH_FIRST_HARVEST,
    ACH_VISITS,
    ACH_VOYAGER,
    HARVEST_PER_TICK,
    HARVEST_RANGE,
    LEDGER_BURNED,
    LEDGER_EXPORTED,
    LEDGER_GENESIS,
    LEDGER_IMPORTED,
    MAX_SPEED,
    RES_CRYSTAL,
    RES_METAL,
    VISIT_RADIUS,
)
from sim.violations import V_LEDGER, V_NEGATIVE, V_SPEED, violate

_HR2 = np.float32(HARVEST_RANGE * HARVEST_RANGE)
_VR2 = np.float32(VISIT_RADIUS * VISIT_RADIUS)
# float32 integration may land a hair above the clamp; anything beyond this is real
_SPEED_TOLERANCE = MAX_SPEED * (1.0 + 1e-4)


@njit(cache=True)
def rules(
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    planet_res: np.ndarray,
    planet_deposit: np.ndarray,
    bal_metal: np.ndarray,
    bal_crystal: np.ndarray,
    bal_dirty: np.ndarray,
    buildings: np.ndarray,
    achievements: np.ndarray,
    visited: np.ndarray,
    visited_n: np.ndarray,
    distance: np.ndarray,
    harvested: np.ndarray,
    harvest_target: np.ndarray,
    last_x: np.ndarray,
    last_y: np.ndarray,
    ev: Any,
    player_lo: int,
) -> None:
    """Per player after movement: distance, visits, harvest, achievements, balance events."""
    deposit = planet_deposit
    n_planets = deposit.shape[0]
    one = np.uint64(1)
    for p in range(bal_metal.shape[0]):
        slot = player_lo + p
        if alive[slot] == 0 or is_player[slot] == 0:
            continue
        px, py = x[slot], y[slot]
        ddx = np.float64(px) - np.float64(last_x[p])
        ddy = np.float64(py) - np.float64(last_y[p])
        distance[p] += np.sqrt(ddx * ddx + ddy * ddy)
        last_x[p], last_y[p] = px, py
        # visits
        for k in range(n_planets):
            kx = x[k] - px
            ky = y[k] - py
            if kx * kx + ky * ky <= _VR2:
                bit = one << np.uint64(k)
                if visited[p] & bit == 0:
                    visited[p] |= bit
                    visited_n[p] += 1
        # harvest: bounded rate, stops out of range or when depleted
        t = harvest_target[p]
        if t > 0:
            k = t - 1
            kx = x[k] - px
            ky = y[k] - py
            if kx * kx + ky * ky > _HR2 or deposit[k] <= 0:
                harvest_target[p] = 0
            else:
                amount = min(np.int64(HARVEST_PER_TICK), deposit[k])
                deposit[k] -= amount
                harvested[p] += amount
                if planet_res[k] == RES_METAL:
                    bal_metal[p] += amount
                    bal_dirty[p] |= 1
                else:
                    bal_crystal[p] += amount
                    bal_dirty[p] |= 2
                if deposit[k] == 0:
                    harvest_target[p] = 0
        eid = make_id(slot, generation[slot])
        # coalesced balance events: at most one per resource per player per tick
        d = bal_dirty[p]
        if d & 1:
            emit(ev, EV_BALANCE, eid, RES_METAL, bal_metal[p])
        if d & 2:
            emit(ev, EV_BALANCE, eid, RES_CRYSTAL, bal_crystal[p])
        bal_dirty[p] = 0
        # achievements, from state; each granted once
        have = achievements[p]
        earned = np.uint32(0)
        if harvested[p] > 0:
            earned |= np.uint32(1 << ACH_FIRST_HARVEST)
        if visited_n[p] >= ACH_VISITS:
            earned |= np.uint32(1 << ACH_EXPLORER)
        if buildings[p] >= ACH_BUILDINGS:
            earned |= np.uint32(1 << ACH_BUILDER)
        if distance[p] >= ACH_DISTANCE:
            earned |= np.uint32(1 << ACH_VOYAGER)
        new = earned & ~have
        if new != 0:
            achievements[p] = have | new
            for a in range(4):
                if new & np.uint32(1 << a):
                    emit(ev, EV_ACHIEVEMENT, eid, a, 0)


@njit(cache=True)
def books(
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    planet_deposit: np.ndarray,
    bal_metal: np.ndarray,
    bal_crystal: np.ndarray,
    ledger: np.ndarray,
    vio: Any,
    player_lo: int,
) -> None:
    """State validators after the rules: ship speeds, balances never negative, conservation."""
    deposit = planet_deposit
    total = np.int64(0)
    for k in range(deposit.shape[0]):
        total += deposit[k]
    for p in range(bal_metal.shape[0]):
        total += bal_metal[p] + bal_crystal[p]
        slot = player_lo + p
        if alive[slot] == 0 or is_player[slot] == 0:
            continue
        eid = make_id(slot, generation[slot])
        s = np.sqrt(np.float64(vx[slot]) ** 2 + np.float64(vy[slot]) ** 2)
        if s > _SPEED_TOLERANCE:
            violate(vio, V_SPEED, eid, s, MAX_SPEED)
        if bal_metal[p] < 0:
            violate(vio, V_NEGATIVE, eid, bal_metal[p], 0.0)
        if bal_crystal[p] < 0:
            violate(vio, V_NEGATIVE, eid, bal_crystal[p], 0.0)
    expected = ledger[LEDGER_GENESIS] + ledger[LEDGER_IMPORTED] - ledger[LEDGER_EXPORTED] - ledger[LEDGER_BURNED]
    if total != expected:
        violate(vio, V_LEDGER, 0, total - expected, 0.0)
        ledger[LEDGER_GENESIS] += total - expected  # rebase: one violation per discrepancy
