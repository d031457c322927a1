"""Startales: the reference game — a 2D space campaign generated from a seed.

Entities (one table): planets (kind 0, static, a resource type and an int64 deposit), NPC drones
(kind 1, wander like wander's NPCs) and player ships (kind 2, thrust-driven). Slot layout:
planets [0, P), drones [P, P+D), players [P+D, capacity); per-player arrays are indexed by
``slot - P - D``.

Actions (input ``action``): 0 none, 1 HARVEST (nearest planet with a deposit within
HARVEST_RANGE, else REF_NO_TARGET), 2 BUILD (BUILD_COST_* or REF_UNAFFORDABLE), 3 STOP
(harvesting), 4 SCAN (lag-compensated: tag the drone whose id is ``arg`` — the uint32 id's bits as
an int32, see `scan_arg` — if it was within SCAN_RANGE of the ship at tick ``client_tick``, the
tick the client was displaying; see docs/prediction.md); any other value is REF_BAD_ACTION. An
input is atomic: refused means no effect at all (no thrust, no seq update).

SCAN refusals, in this order: REF_NO_TARGET (the target is not a live drone now), REF_REWIND
(``client_tick`` is in the future or more than ``max_rewind`` ticks in the past), REF_NO_TARGET
(the history holds no position of that drone at ``client_tick``), REF_OUT_OF_REACH (farther than
SCAN_RANGE from the ship's current position at ``client_tick``). A hit increments the player's
``scans`` and emits EV_SCANNED (a = target id, b = rewind in ticks). After the rules, the drones'
positions of the new tick are recorded in the history ring (sim/history.py).

Each tick: inputs → drone turns → movement → rules (distance, visits, harvest, achievements,
coalesced EV_BALANCE events).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
from numba import njit

from sim.entities import MAX_CAPACITY, EntityTable, add_entity_arrays, make_id, resolve
from sim.events import (
    EV_ACHIEVEMENT,
    EV_BALANCE,
    EV_BUILT,
    EV_REFUSED,
    REF_BAD_ACTION,
    REF_NO_TARGET,
    REF_UNAFFORDABLE,
    EventBuffer,
    emit,
)
from sim.games.config import read_config
from sim.history import add_history, history_rows, lookup_history, record_history
from sim.inputs import InputBatch
from sim.movement import KIND_DRONE, KIND_PLANET, KIND_SHIP, startales_move
from sim.npc import headings_to_velocity, npc_turns
from sim.rng import (
    STREAM_NPC_HEADING,
    STREAM_NPC_X,
    STREAM_NPC_Y,
    STREAM_PLANET_DEPOSIT,
    STREAM_PLANET_RES,
    STREAM_PLANET_X,
    STREAM_PLANET_Y,
    STREAM_SPAWN_X,
    STREAM_SPAWN_Y,
    uniform_f64,
)
from sim.scalars import Int
from sim.validate import check_input
from sim.warm import exercise
from sim.world import META_NPC_HI, META_NPC_LO, META_PLAYER_LO, META_TICK, World

__all__ = ["KIND_DRONE", "KIND_PLANET", "KIND_SHIP", "StartalesGame", "scan_arg"]

MAX_PLANETS: Final = 64  # the visited bitmask is a uint64
MAX_ACCEL: Final = 200.0  # u/s²
MAX_SPEED: Final = 300.0  # u/s
DRONE_SPEED: Final = 40.0  # u/s
P_TURN: Final = 1.0 / 120.0  # drone turn probability per tick
PLANET_MARGIN: Final = 100.0  # planets are generated at least this far inside the bounds
DEPOSIT_MIN: Final = 5_000
DEPOSIT_MAX: Final = 20_000
HARVEST_RANGE: Final = 60.0
HARVEST_PER_TICK: Final = 5
VISIT_RADIUS: Final = 80.0
BUILD_COST_METAL: Final = 100
BUILD_COST_CRYSTAL: Final = 50

RES_METAL: Final = 0
RES_CRYSTAL: Final = 1

ACTION_NONE: Final = 0
ACTION_HARVEST: Final = 1
ACTION_BUILD: Final = 2
ACTION_STOP: Final = 3
ACTION_SCAN: Final = 4

SCAN_RANGE: Final = 150.0  # u, ship (now) to target drone (at the client's displayed tick)
MAX_REWIND_SECONDS: Final = 0.4  # lag-compensation bound: 24 ticks at 60 Hz

# Event kind and refusal reasons of SCAN (sim/events.py numbering continued; kept here because the
# scan is startales' own rule).
EV_SCANNED: Final = 5  # a = target id, b = rewind (ticks)
REF_REWIND: Final = 8  # client_tick in the future or beyond the maximum rewind
REF_OUT_OF_REACH: Final = 9  # target farther than SCAN_RANGE at client_tick

# achievement ids (EV_ACHIEVEMENT.a); bit (1 << id) of `achievements`
ACH_FIRST_HARVEST: Final = 0  # any resource ever harvested
ACH_EXPLORER: Final = 1  # visited >= ACH_VISITS planets
ACH_BUILDER: Final = 2  # >= ACH_BUILDINGS buildings
ACH_VOYAGER: Final = 3  # distance travelled >= ACH_DISTANCE
ACH_VISITS: Final = 5
ACH_BUILDINGS: Final = 3
ACH_DISTANCE: Final = 5000.0

RECORD_DTYPE: Final = np.dtype(
    [("id", "<u4"), ("kind", "u1"), ("x", "<f4"), ("y", "<f4"), ("vx", "<f4"), ("vy", "<f4")]
)

CONFIG_SPEC: Final = {
    "width": (4000, 100, 1_000_000),
    "height": (4000, 100, 1_000_000),
    "planets": (48, 0, MAX_PLANETS),
    "drones": (200, 0, MAX_CAPACITY // 2),
    "max_players": (1024, 1, MAX_CAPACITY // 4),
    "tick_rate": (60, 1, 1000),
}

PLAYER_ARRAYS: Final = {
    "bal_metal": np.int64,
    "bal_crystal": np.int64,
    "bal_dirty": np.uint8,  # bit r: balance r changed this tick (always 0 between ticks)
    "buildings": np.int32,
    "achievements": np.uint32,
    "visited": np.uint64,
    "visited_n": np.int32,
    "distance": np.float64,
    "harvested": np.int64,  # units ever harvested
    "harvest_target": np.int32,  # planet index + 1, 0 = not harvesting
    "last_x": np.float32,  # position at the end of the previous rules pass
    "last_y": np.float32,
    "scans": np.int32,  # successful scans
}

_HR2 = np.float32(HARVEST_RANGE * HARVEST_RANGE)
_VR2 = np.float32(VISIT_RADIUS * VISIT_RADIUS)
_BIG = np.float32(np.inf)
_SR2 = np.float32(SCAN_RANGE * SCAN_RANGE)


def scan_arg(target: int) -> int:
    """The input ``arg`` (int32) carrying a uint32 target entity id (its bits, two's complement)."""
    t = int(target) & 0xFFFFFFFF
    return t - (1 << 32) if t >= 1 << 31 else t


@njit(cache=True)
def _check_scan(
    tid: Int,
    ct: Int,
    now: Int,
    max_rewind: Int,
    px: np.float32,
    py: np.float32,
    kind: np.ndarray,
    alive: np.ndarray,
    generation: np.ndarray,
    npc_lo: Int,
    hist_x: np.ndarray,
    hist_y: np.ndarray,
    hist_tick: np.ndarray,
    hist_id: np.ndarray,
    hist_since: np.ndarray,
) -> int:
    """Refusal reason of a SCAN of entity ``tid`` as seen at tick ``ct`` (0 = hit)."""
    ts = resolve(tid, alive, generation)
    if ts < 0 or kind[ts] != KIND_DRONE:
        return REF_NO_TARGET
    if ct > now or now - ct > max_rewind:
        return REF_REWIND
    ok, hx, hy = lookup_history(tid, ct, npc_lo, hist_x, hist_y, hist_tick, hist_id, hist_since)
    if not ok:
        return REF_NO_TARGET
    ddx = hx - px
    ddy = hy - py
    if ddx * ddx + ddy * ddy > _SR2:
        return REF_OUT_OF_REACH
    return 0


@njit(cache=True)
def _nearest_planet(px: np.float32, py: np.float32, x: np.ndarray, y: np.ndarray, deposit: np.ndarray) -> int:
    """Index of the nearest planet with a deposit within HARVEST_RANGE, or -1 (ties: lowest)."""
    best, best_d2 = -1, _BIG
    for k in range(deposit.shape[0]):
        if deposit[k] <= 0:
            continue
        ddx = x[k] - px
        ddy = y[k] - py
        d2 = ddx * ddx + ddy * ddy
        if d2 <= _HR2 and d2 < best_d2:
            best, best_d2 = k, d2
    return best


@njit(cache=True)
def startales_inputs(
    in_eid: np.ndarray,
    in_seq: np.ndarray,
    in_client_tick: np.ndarray,
    in_dx: np.ndarray,
    in_dy: np.ndarray,
    in_action: np.ndarray,
    in_arg: np.ndarray,
    accepted: np.ndarray,
    n: Int,
    meta: np.ndarray,
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    last_seq: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    tx: np.ndarray,
    ty: np.ndarray,
    deposit: np.ndarray,
    bal_metal: np.ndarray,
    bal_crystal: np.ndarray,
    bal_dirty: np.ndarray,
    buildings: np.ndarray,
    harvest_target: np.ndarray,
    kind: np.ndarray,
    scans: np.ndarray,
    max_rewind: Int,
    hist_x: np.ndarray,
    hist_y: np.ndarray,
    hist_tick: np.ndarray,
    hist_id: np.ndarray,
    hist_since: np.ndarray,
    ev_kind: np.ndarray,
    ev_eid: np.ndarray,
    ev_a: np.ndarray,
    ev_b: np.ndarray,
    ev_counts: np.ndarray,
) -> None:
    """Validate and apply inputs in batch order (thrust, harvest start/stop, build, scan)."""
    player_lo = meta[META_PLAYER_LO]
    npc_lo = meta[META_NPC_LO]
    now = meta[META_TICK]
    for i in range(n):
        slot, reason = check_input(in_eid[i], in_seq[i], in_dx[i], in_dy[i], alive, generation, is_player, last_seq)
        action = in_action[i]
        target = -1
        tid = np.int64(in_arg[i]) & 0xFFFFFFFF
        ct = np.int64(in_client_tick[i])
        if reason == 0:
            p = slot - player_lo
            if action == ACTION_HARVEST:
                target = _nearest_planet(x[slot], y[slot], x, y, deposit)
                if target < 0:
                    reason = REF_NO_TARGET
            elif action == ACTION_BUILD:
                if bal_metal[p] < BUILD_COST_METAL or bal_crystal[p] < BUILD_COST_CRYSTAL:
                    reason = REF_UNAFFORDABLE
            elif action == ACTION_SCAN:
                reason = _check_scan(
                    tid, ct, now, max_rewind, x[slot], y[slot], kind, alive, generation, npc_lo,
                    hist_x, hist_y, hist_tick, hist_id, hist_since,
                )  # fmt: skip
            elif action != ACTION_NONE and action != ACTION_STOP:
                reason = REF_BAD_ACTION
        if reason != 0:
            accepted[i] = 0
            emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_REFUSED, in_eid[i], i, reason)
            continue
        accepted[i] = 1
        last_seq[slot] = in_seq[i]
        tx[slot] = in_dx[i]
        ty[slot] = in_dy[i]
        if action == ACTION_HARVEST:
            harvest_target[p] = target + 1
        elif action == ACTION_STOP:
            harvest_target[p] = 0
        elif action == ACTION_BUILD:
            bal_metal[p] -= BUILD_COST_METAL
            bal_crystal[p] -= BUILD_COST_CRYSTAL
            bal_dirty[p] |= 3
            buildings[p] += 1
            emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_BUILT, in_eid[i], buildings[p], 0)
        elif action == ACTION_SCAN:
            scans[p] += 1
            emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_SCANNED, in_eid[i], tid, now - ct)


@njit(cache=True)
def startales_rules(
    meta: np.ndarray,
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    planet_res: np.ndarray,
    deposit: np.ndarray,
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
    ev_kind: np.ndarray,
    ev_eid: np.ndarray,
    ev_a: np.ndarray,
    ev_b: np.ndarray,
    ev_counts: np.ndarray,
) -> None:
    """Per player after movement: distance, visits, harvest, achievements, balance events."""
    player_lo = meta[META_PLAYER_LO]
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
            emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_BALANCE, eid, RES_METAL, bal_metal[p])
        if d & 2:
            emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_BALANCE, eid, RES_CRYSTAL, bal_crystal[p])
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
                    emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_ACHIEVEMENT, eid, a, 0)


class StartalesGame:
    name: str = "startales"
    record_dtype: np.dtype = RECORD_DTYPE

    def __init__(self, config: Mapping[str, object] | None = None) -> None:
        cfg = read_config(config, CONFIG_SPEC, self.name)
        self.config = cfg
        self.width = float(cfg["width"])
        self.height = float(cfg["height"])
        self.planets = cfg["planets"]
        self.drones = cfg["drones"]
        self.max_players = cfg["max_players"]
        self.tick_rate = cfg["tick_rate"]
        self.capacity = self.planets + self.drones + self.max_players
        if self.capacity > MAX_CAPACITY:
            raise ValueError(f"startales: capacity {self.capacity} > {MAX_CAPACITY}")
        self.dt = np.float32(1.0 / self.tick_rate)
        self._w = np.float32(self.width)
        self._h = np.float32(self.height)
        self._accel = np.float32(MAX_ACCEL)
        self._max_speed = np.float32(MAX_SPEED)
        self._drone_speed = np.float32(DRONE_SPEED)
        self.max_rewind = int(np.ceil(MAX_REWIND_SECONDS * self.tick_rate - 1e-9))
        self.history_rows = history_rows(self.tick_rate, self.max_rewind)

    def constants(self) -> dict[str, float | int | str]:
        return {
            "width": self.width,
            "height": self.height,
            "tick_rate": self.tick_rate,
            "planets": self.planets,
            "drones": self.drones,
            "max_players": self.max_players,
            "max_accel": MAX_ACCEL,
            "max_speed": MAX_SPEED,
            "drone_speed": DRONE_SPEED,
            "harvest_range": HARVEST_RANGE,
            "harvest_per_tick": HARVEST_PER_TICK,
            "visit_radius": VISIT_RADIUS,
            "build_cost_metal": BUILD_COST_METAL,
            "build_cost_crystal": BUILD_COST_CRYSTAL,
            "ach_visits": ACH_VISITS,
            "ach_buildings": ACH_BUILDINGS,
            "ach_distance": ACH_DISTANCE,
            "scan_range": SCAN_RANGE,
            "max_rewind_ticks": self.max_rewind,
            "history_ticks": self.history_rows,
        }

    # -- creation ---------------------------------------------------------------------------------
    def create_world(self, seed: int) -> World:
        P, D = self.planets, self.drones
        world = World(self.capacity, seed)
        add_entity_arrays(world)
        world.add("kind", np.uint8)
        for name in ("x", "y", "vx", "vy", "tx", "ty"):
            world.add(name, np.float32)
        world.add("planet_res", np.uint8, P)
        world.add("planet_deposit", np.int64, P)
        for name, dtype in PLAYER_ARRAYS.items():
            world.add(name, dtype, self.max_players)
        meta = world.meta
        meta[META_NPC_LO], meta[META_NPC_HI], meta[META_PLAYER_LO] = P, P + D, P + D
        table = EntityTable(world)
        a, s = world.arrays, world.seed
        # planets
        table.spawn_many(P, 0, P)
        a["kind"][:P] = KIND_PLANET
        mw, mh = self.width - 2 * PLANET_MARGIN, self.height - 2 * PLANET_MARGIN
        a["x"][:P] = (PLANET_MARGIN + uniform_f64(P, s, STREAM_PLANET_X) * mw).astype(np.float32)
        a["y"][:P] = (PLANET_MARGIN + uniform_f64(P, s, STREAM_PLANET_Y) * mh).astype(np.float32)
        a["planet_res"][:] = uniform_f64(P, s, STREAM_PLANET_RES) < 0.5
        span = DEPOSIT_MAX - DEPOSIT_MIN + 1
        a["planet_deposit"][:] = DEPOSIT_MIN + np.floor(uniform_f64(P, s, STREAM_PLANET_DEPOSIT) * span)
        # drones
        table.spawn_many(D, P, P + D)
        a["kind"][P : P + D] = KIND_DRONE
        a["x"][P : P + D] = (uniform_f64(D, s, STREAM_NPC_X) * self.width).astype(np.float32)
        a["y"][P : P + D] = (uniform_f64(D, s, STREAM_NPC_Y) * self.height).astype(np.float32)
        vx, vy = headings_to_velocity(uniform_f64(D, s, STREAM_NPC_HEADING), DRONE_SPEED)
        a["vx"][P : P + D], a["vy"][P : P + D] = vx, vy
        add_history(world, P, P + D, self.history_rows)
        return world

    # -- players ----------------------------------------------------------------------------------
    def join(self, world: World) -> int:
        counter = world.spawn_counter
        player_lo = int(world.meta[META_PLAYER_LO])
        eid = EntityTable(world).spawn(player_lo, world.capacity)
        slot = eid & 0xFFFFF
        a, s = world.arrays, world.seed
        x = np.float32(uniform_f64(1, s, STREAM_SPAWN_X, counter)[0] * self.width)
        y = np.float32(uniform_f64(1, s, STREAM_SPAWN_Y, counter)[0] * self.height)
        a["x"][slot], a["y"][slot] = x, y
        a["kind"][slot] = KIND_SHIP
        a["is_player"][slot] = 1
        self._reset_player(world, slot)
        a["x"][slot], a["y"][slot] = x, y
        a["last_x"][slot - player_lo], a["last_y"][slot - player_lo] = x, y
        return eid

    def _reset_player(self, world: World, slot: int) -> None:
        a = world.arrays
        for name in ("vx", "vy", "tx", "ty", "last_seq"):
            a[name][slot] = 0
        p = slot - int(world.meta[META_PLAYER_LO])
        for name in PLAYER_ARRAYS:
            a[name][p] = 0

    def restore_progress(self, world: World, eid: int, progress: Mapping[str, object]) -> None:
        """Give a fresh ship a returning player's durable progress (from PostgreSQL, via the journal).

        Keys: "resources" {"0": metal, "1": crystal}, "buildings", "achievements" (bitmask).
        Negative or malformed values are ignored rather than trusted.
        """
        slot = EntityTable(world).slot_of(eid)
        if slot < 0:
            return
        a, p = world.arrays, slot - int(world.meta[META_PLAYER_LO])
        res = progress.get("resources")
        if isinstance(res, Mapping):
            for r, name in ((0, "bal_metal"), (1, "bal_crystal")):
                v = res.get(str(r), res.get(r, 0))
                if isinstance(v, int) and v >= 0:
                    a[name][p] = v
        b = progress.get("buildings")
        if isinstance(b, int) and b >= 0:
            a["buildings"][p] = b
        ach = progress.get("achievements")
        if isinstance(ach, int) and 0 <= ach < 2**32:
            a["achievements"][p] = ach

    def leave(self, world: World, eid: int) -> None:
        table = EntityTable(world)
        slot = table.slot_of(eid)
        a = world.arrays
        if slot < 0 or not a["is_player"][slot]:
            return
        table.despawn(eid)
        self._reset_player(world, slot)
        for name in ("x", "y", "kind", "is_player"):
            a[name][slot] = 0

    # -- the tick ---------------------------------------------------------------------------------
    def step(self, world: World, inputs: InputBatch, events: EventBuffer) -> None:
        a = world.arrays
        meta = a["meta"]
        alive, gen, isp = a["alive"], a["generation"], a["is_player"]
        x, y, vx, vy, tx, ty = a["x"], a["y"], a["vx"], a["vy"], a["tx"], a["ty"]
        deposit = a["planet_deposit"]
        ev = events.arrays()
        if "hist_tick" not in a:  # a world saved before lag compensation existed
            add_history(world, int(meta[META_NPC_LO]), int(meta[META_NPC_HI]), self.history_rows)
        hist = (a["hist_x"], a["hist_y"], a["hist_tick"], a["hist_id"], a["hist_since"])
        startales_inputs(
            inputs.eid, inputs.seq, inputs.client_tick, inputs.dx, inputs.dy, inputs.action, inputs.arg,
            inputs.accepted, np.int64(inputs.n), meta, alive, gen, isp, a["last_seq"], x, y, tx, ty, deposit,
            a["bal_metal"], a["bal_crystal"], a["bal_dirty"], a["buildings"], a["harvest_target"],
            a["kind"], a["scans"], np.int64(self.max_rewind), *hist, *ev,
        )  # fmt: skip
        npc_turns(meta, alive, vx, vy, self._drone_speed, P_TURN)
        startales_move(x, y, vx, vy, tx, ty, a["kind"], alive, self.dt, self._w, self._h, self._accel, self._max_speed)
        startales_rules(
            meta, alive, gen, isp, x, y, a["planet_res"], deposit, a["bal_metal"], a["bal_crystal"],
            a["bal_dirty"], a["buildings"], a["achievements"], a["visited"], a["visited_n"],
            a["distance"], a["harvested"], a["harvest_target"], a["last_x"], a["last_y"], *ev,
        )  # fmt: skip
        meta[META_TICK] += 1
        record_history(meta[META_TICK], meta[META_NPC_LO], alive, gen, x, y, *hist)

    def always_relevant(self, world: World) -> np.ndarray:
        """Ids every client sees whatever its view radius: the planets (the map players navigate by)."""
        a = world.arrays
        idx = np.flatnonzero((a["alive"] != 0) & (a["kind"] == KIND_PLANET))
        return np.sort((a["generation"][idx].astype(np.uint32) << 20) | idx.astype(np.uint32))

    def replicate(self, world: World, out: np.ndarray) -> int:
        a = world.arrays
        idx = np.flatnonzero(a["alive"])
        n = len(idx)
        if len(out) < n:
            raise ValueError(f"replicate: out holds {len(out)} records, {n} needed")
        out["id"][:n] = (a["generation"][idx].astype(np.uint32) << 20) | idx.astype(np.uint32)
        for name in ("kind", "x", "y", "vx", "vy"):
            out[name][:n] = a[name][idx]
        return n

    def warmup(self) -> None:
        exercise(type(self)({"planets": 4, "drones": 8, "max_players": 4, "tick_rate": self.tick_rate}))
