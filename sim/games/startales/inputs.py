"""Startales' input kernel: every input of a tick validated, then applied or refused, in batch order.

An input is atomic: refused means no effect at all (no thrust, no seq update). Validators raise
violation events (sim/violations.py) where a refusal is evidence of cheating rather than of lag:

- shared (sim/validate.py, before this kernel): thrust beyond range, input rate, time discrepancy;
- HARVEST far from any planet (beyond HARVEST_RANGE + HARVEST_SLACK), or requested faster than
  one per HARVEST_REQ_PERIOD_S with a burst of HARVEST_REQ_BURST;
- BUILD or GIFT beyond the balance;
- GIFT with a transaction id already used: an identical retry of the last transfer is answered
  (EV_TRANSFER, TXN_DUPLICATE) and moves nothing; an older id, a different transfer under the
  same id, or more than TXN_RETRIES retries is a violation;
- CLAIM of an achievement the state does not hold;
- an unknown action, or a GIFT with illegal arguments.

SCAN is lag-compensated (sim/history.py): the target is judged where it was at the input's client
tick, within the rewind the input's connection may claim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from sim.entities import resolve
from sim.events import REF_BAD_ACTION, REF_NO_TARGET, REF_OUT_OF_REACH, REF_REWIND, REF_UNAFFORDABLE, emit
from sim.games.startales.constants import (
    ACH_COUNT,
    ACTION_BUILD,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    ACTION_NONE,
    ACTION_SCAN,
    ACTION_STOP,
    BUILD_COST_CRYSTAL,
    BUILD_COST_METAL,
    EV_BUILT,
    EV_RECEIVED,
    EV_SCANNED,
    EV_TRANSFER,
    HARVEST_RANGE,
    HARVEST_SLACK,
    KIND_DRONE,
    KIND_SHIP,
    LEDGER_BURNED,
    MAX_GIFT,
    REF_DUPLICATE,
    REF_NOT_EARNED,
    RES_METAL,
    SCAN_RANGE,
    TXN_APPLIED,
    TXN_DUPLICATE,
    TXN_RETRIES,
)
from sim.history import hist_at, rewind_ok
from sim.scalars import Int
from sim.validate import refuse
from sim.violations import (
    V_BAD_ACTION,
    V_FORGED_CLAIM,
    V_HARVEST_RANGE,
    V_HARVEST_RATE,
    V_TXN_REPLAY,
    V_UNAFFORDABLE,
    violate,
)

_HR2 = np.float32(HARVEST_RANGE * HARVEST_RANGE)
_BIG = np.float32(np.inf)
_SR2 = np.float32(SCAN_RANGE * SCAN_RANGE)


@njit(cache=True)
def _check_scan(
    i: Int, inp: Any, hist: Any, tid: Int, px: np.float32, py: np.float32, kind: np.ndarray, alive: np.ndarray,
    generation: np.ndarray, max_rewind: Int,
) -> int:  # fmt: skip
    """Refusal reason of a SCAN of entity ``tid`` as seen at the input's client tick (0 = hit)."""
    ts = resolve(tid, alive, generation)
    if ts < 0 or kind[ts] != KIND_DRONE:
        return REF_NO_TARGET
    if not rewind_ok(i, inp, max_rewind):
        return REF_REWIND
    ok, hx, hy = hist_at(hist, tid, inp.client_tick[i])
    if not ok:
        return REF_NO_TARGET
    ddx = hx - px
    ddy = hy - py
    if ddx * ddx + ddy * ddy > _SR2:
        return REF_OUT_OF_REACH
    return 0


@njit(cache=True)
def _harvest_target(
    want: Int, px: np.float32, py: np.float32, x: np.ndarray, y: np.ndarray, deposit: np.ndarray
) -> tuple[int, float]:
    """(planet index to harvest or -1, distance to the planet asked for or to the nearest planet).

    ``want`` = planet index + 1, or 0 for the nearest planet with a deposit within HARVEST_RANGE
    (ties: lowest index). The distance is what the range violation is measured on.
    """
    n = deposit.shape[0]
    if want > 0:
        k = want - 1
        if k >= n:
            return -1, np.inf
        ddx = x[k] - px
        ddy = y[k] - py
        d2 = ddx * ddx + ddy * ddy
        return (k if d2 <= _HR2 and deposit[k] > 0 else -1), np.sqrt(np.float64(d2))
    best, best_d2, near_d2 = -1, _BIG, _BIG
    for k in range(n):
        ddx = x[k] - px
        ddy = y[k] - py
        d2 = ddx * ddx + ddy * ddy
        if d2 < near_d2:
            near_d2 = d2
        if deposit[k] > 0 and d2 <= _HR2 and d2 < best_d2:
            best, best_d2 = k, d2
    return best, np.sqrt(np.float64(near_d2))


@njit(cache=True)
def take_actions(
    inp: Any, ev: Any, vio: Any, hist: Any, x: np.ndarray, y: np.ndarray, kind: np.ndarray,
    alive: np.ndarray, generation: np.ndarray, is_player: np.ndarray, planet_deposit: np.ndarray,
    bal_metal: np.ndarray, bal_crystal: np.ndarray, bal_dirty: np.ndarray, buildings: np.ndarray,
    achievements: np.ndarray, harvest_target: np.ndarray, hv_tat: np.ndarray, txn_last: np.ndarray,
    txn_to: np.ndarray, txn_res: np.ndarray, txn_amount: np.ndarray, txn_dups: np.ndarray, ledger: np.ndarray,
    scans: np.ndarray, player_lo: Int, max_rewind: Int, hv_period: Int, hv_burst: Int,
) -> None:  # fmt: skip
    """Validate and apply the tick's actions in batch order (the game's input system)."""
    now = inp.now
    deposit = planet_deposit
    for i in range(inp.n):
        slot = inp.slot[i]
        if slot < 0:
            continue  # refused by the shared rules
        eid = inp.eid[i]
        action = inp.action[i]
        p = slot - player_lo
        tid = np.int64(inp.arg[i]) & 0xFFFFFFFF
        target = -1
        reason = 0
        rslot: Int = -1
        amount = np.int64(0)
        res = np.int64(0)
        dup = False
        if action == ACTION_HARVEST:
            tat = hv_tat[p]
            if tat < now:
                tat = now
            if tat - now > (hv_burst - 1) * hv_period:
                reason = REF_NO_TARGET
                violate(vio, V_HARVEST_RATE, eid, (tat - now) / hv_period + 1.0, hv_burst)
            else:
                hv_tat[p] = tat + hv_period
                target, dist = _harvest_target(inp.arg[i], x[slot], y[slot], x, y, deposit)
                if target < 0:
                    reason = REF_NO_TARGET
                    if dist > HARVEST_RANGE + HARVEST_SLACK:
                        violate(vio, V_HARVEST_RANGE, eid, dist, HARVEST_RANGE + HARVEST_SLACK)
        elif action == ACTION_BUILD:
            if bal_metal[p] < BUILD_COST_METAL or bal_crystal[p] < BUILD_COST_CRYSTAL:
                reason = REF_UNAFFORDABLE
                short = bal_metal[p] if bal_metal[p] < BUILD_COST_METAL else bal_crystal[p]
                cost = BUILD_COST_METAL if bal_metal[p] < BUILD_COST_METAL else BUILD_COST_CRYSTAL
                violate(vio, V_UNAFFORDABLE, eid, cost, short)
        elif action == ACTION_SCAN:
            reason = _check_scan(i, inp, hist, tid, x[slot], y[slot], kind, alive, generation, max_rewind)
        elif action == ACTION_GIFT:
            res = np.int64(inp.arg2[i])
            amount = np.int64(inp.arg3[i])
            txn = np.int64(inp.txn[i])
            if res < 0 or res > 1 or amount < 1 or amount > MAX_GIFT or txn < 1:
                reason = REF_BAD_ACTION
                violate(vio, V_BAD_ACTION, eid, action, 0.0)
            elif txn <= txn_last[p]:
                same = txn == txn_last[p] and txn_to[p] == tid and txn_res[p] == res and txn_amount[p] == amount
                if same and txn_dups[p] < TXN_RETRIES:
                    dup = True  # answered, accepted, moves nothing
                else:
                    reason = REF_DUPLICATE
                    violate(vio, V_TXN_REPLAY, eid, txn, txn_last[p])
            else:
                rslot = resolve(tid, alive, generation)
                if rslot < 0 or is_player[rslot] == 0 or kind[rslot] != KIND_SHIP or rslot == slot:
                    reason = REF_NO_TARGET  # the recipient left: not evidence of anything
                else:
                    bal = bal_metal[p] if res == RES_METAL else bal_crystal[p]
                    if bal < amount:
                        reason = REF_UNAFFORDABLE
                        violate(vio, V_UNAFFORDABLE, eid, amount, bal)
        elif action == ACTION_CLAIM:
            a = inp.arg[i]
            if a < 0 or a >= ACH_COUNT or achievements[p] & np.uint32(1 << a) == 0:
                reason = REF_NOT_EARNED
                violate(vio, V_FORGED_CLAIM, eid, a, achievements[p])
        elif action != ACTION_NONE and action != ACTION_STOP:
            reason = REF_BAD_ACTION
            violate(vio, V_BAD_ACTION, eid, action, 0.0)
        if reason != 0:
            refuse(i, inp, ev, reason)
            continue
        if action == ACTION_HARVEST:
            harvest_target[p] = target + 1
        elif action == ACTION_STOP:
            harvest_target[p] = 0
        elif action == ACTION_BUILD:
            bal_metal[p] -= BUILD_COST_METAL
            bal_crystal[p] -= BUILD_COST_CRYSTAL
            bal_dirty[p] |= 3
            buildings[p] += 1
            ledger[LEDGER_BURNED] += BUILD_COST_METAL + BUILD_COST_CRYSTAL
            emit(ev, EV_BUILT, eid, buildings[p], 0)
        elif action == ACTION_SCAN:
            scans[p] += 1
            emit(ev, EV_SCANNED, eid, tid, now - np.int64(inp.client_tick[i]))
        elif action == ACTION_GIFT:
            txn = np.int64(inp.txn[i])
            if dup:
                txn_dups[p] += 1
                emit(ev, EV_TRANSFER, eid, txn, TXN_DUPLICATE)
                continue
            q = rslot - player_lo
            bit = np.uint8(1 << res)
            if res == RES_METAL:
                bal_metal[p] -= amount
                bal_metal[q] += amount
            else:
                bal_crystal[p] -= amount
                bal_crystal[q] += amount
            bal_dirty[p] |= bit
            bal_dirty[q] |= bit
            txn_last[p], txn_to[p], txn_res[p], txn_amount[p], txn_dups[p] = txn, tid, res, amount, 0
            emit(ev, EV_TRANSFER, eid, txn, TXN_APPLIED)
            emit(ev, EV_RECEIVED, tid, eid, amount * 2 + res)
