"""Startales: the reference game — a 2D space campaign generated from a seed.

Entities (one table): planets (kind 0, static, a resource type and an int64 deposit), NPC drones
(kind 1, wander like wander's NPCs) and player ships (kind 2, thrust-driven). Slot layout:
planets [0, P), drones [P, P+D), players [P+D, capacity); per-player arrays are indexed by
``slot - P - D``.

Actions (input ``action``, constants.py): 0 none, 1 HARVEST (``arg`` = planet index + 1, or 0
for the nearest planet with a deposit within HARVEST_RANGE; else REF_NO_TARGET), 2 BUILD
(BUILD_COST_* or REF_UNAFFORDABLE), 3 STOP (harvesting), 4 SCAN (lag-compensated: tag the drone
whose id is ``arg`` — the uint32 id's bits as an int32, see `scan_arg` — if it was within
SCAN_RANGE of the ship at tick ``client_tick``, the tick the client was displaying; see
docs/prediction.md), 5 GIFT (give ``arg3`` units of resource ``arg2`` to the player ship ``arg``,
idempotent by the client's transaction id ``txn``), 6 CLAIM (the client claims achievement
``arg``; checked against state); any other value is REF_BAD_ACTION. An input is atomic: refused
means no effect at all (no thrust, no seq update). Validators and their violations: inputs.py.

SCAN refusals, in this order: REF_NO_TARGET (the target is not a live drone now), REF_REWIND
(``client_tick`` is in the future or more than ``max_rewind`` ticks in the past), REF_NO_TARGET
(the history holds no position of that drone at ``client_tick``), REF_OUT_OF_REACH (farther than
SCAN_RANGE from the ship's current position at ``client_tick``). A hit increments the player's
``scans`` and emits EV_SCANNED (a = target id, b = rewind in ticks). After the rules, the drones'
positions of the new tick are recorded in the history ring (sim/history.py).

Each tick: inputs (validated) → drone turns → movement → rules (distance, visits, harvest,
achievements, coalesced EV_BALANCE events) → the books (state validators, rules.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from sim.entities import MAX_CAPACITY, EntityTable, add_entity_arrays
from sim.events import EventBuffer
from sim.games.config import read_config
from sim.games.startales.constants import (
    ACH_BUILDINGS,
    ACH_DISTANCE,
    ACH_VISITS,
    BUILD_COST_CRYSTAL,
    BUILD_COST_METAL,
    CONFIG_SPEC,
    DEPOSIT_MAX,
    DEPOSIT_MIN,
    DRONE_SPEED,
    HARVEST_PER_TICK,
    HARVEST_RANGE,
    HARVEST_REQ_BURST,
    HARVEST_REQ_PERIOD_S,
    LEDGER_EXPORTED,
    LEDGER_GENESIS,
    LEDGER_IMPORTED,
    LEDGER_LEN,
    MAX_ACCEL,
    MAX_REWIND_SECONDS,
    MAX_SPEED,
    P_TURN,
    PLANET_MARGIN,
    PLAYER_ARRAYS,
    RECORD_DTYPE,
    SCAN_RANGE,
    VISIT_RADIUS,
)
from sim.games.startales.inputs import startales_inputs
from sim.games.startales.rules import startales_books, startales_rules
from sim.history import add_history, history_rows, record_history
from sim.inputs import InputBatch
from sim.movement import KIND_DRONE, KIND_PLANET, KIND_SHIP, startales_move
from sim.npc import headings_to_velocity, npc_turns
from sim.pacing import add_pace, pace_limits, reset_pace
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
from sim.warm import exercise
from sim.world import META_NPC_HI, META_NPC_LO, META_PLAYER_LO, META_TICK, World


def scan_arg(target: int) -> int:
    """The input ``arg`` (int32) carrying a uint32 entity id (its bits, two's complement)."""
    t = int(target) & 0xFFFFFFFF
    return t - (1 << 32) if t >= 1 << 31 else t


def _ensure_books(world: World, history_rows_: int) -> None:
    """Arrays a world saved by an older version lacks: pacing rows, ledger, transfer state."""
    a = world.arrays
    meta = a["meta"]
    if "hist_tick" not in a:
        add_history(world, int(meta[META_NPC_LO]), int(meta[META_NPC_HI]), history_rows_)
    if "fp_pace" not in a:
        add_pace(world)
    n_players = len(a["bal_metal"])
    for name, dtype in PLAYER_ARRAYS.items():
        if name not in a:
            world.add(name, dtype, n_players)
    if "ledger" not in a:
        ledger = world.add("ledger", np.int64, LEDGER_LEN)
        ledger[LEDGER_GENESIS] = int(a["planet_deposit"].sum() + a["bal_metal"].sum() + a["bal_crystal"].sum())


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
        burst, margin = pace_limits(self.tick_rate)
        hv_period = max(1, round(HARVEST_REQ_PERIOD_S * self.tick_rate))
        # the validators' limits in ticks (startales_inputs' `limits`)
        self.limits = np.array([burst, margin, self.max_rewind, hv_period, HARVEST_REQ_BURST], dtype=np.int64)

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
        add_pace(world)
        world.add("ledger", np.int64, LEDGER_LEN)[LEDGER_GENESIS] = int(a["planet_deposit"].sum())
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
        reset_pace(world, slot)
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

        Keys: "resources" {"0": metal, "1": crystal}, "buildings", "achievements" (bitmask),
        "txn_last" (the last transfer id applied, so a retry after a rejoin stays idempotent),
        "pos" [x, y, vx, vy] (where the ship was and how it moved: a reconnect is no teleport).
        Negative or malformed values are ignored rather than trusted. Restored balances enter the
        books as imported.
        """
        slot = EntityTable(world).slot_of(eid)
        if slot < 0:
            return
        a, p = world.arrays, slot - int(world.meta[META_PLAYER_LO])
        res = progress.get("resources")
        if isinstance(res, Mapping):
            for r, name in ((0, "bal_metal"), (1, "bal_crystal")):
                v = res.get(str(r), res.get(r, 0))
                if isinstance(v, int) and 0 <= v < 2**62:
                    a["ledger"][LEDGER_IMPORTED] += v - int(a[name][p])
                    a[name][p] = v
        b = progress.get("buildings")
        if isinstance(b, int) and b >= 0:
            a["buildings"][p] = b
        ach = progress.get("achievements")
        if isinstance(ach, int) and 0 <= ach < 2**32:
            a["achievements"][p] = ach
        txn = progress.get("txn_last")
        if isinstance(txn, int) and 0 <= txn < 2**32:
            a["txn_last"][p] = txn
        pos = progress.get("pos")
        if isinstance(pos, list) and len(pos) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in pos):
            x, y = min(max(pos[0], 0.0), self.width), min(max(pos[1], 0.0), self.height)
            vx, vy = pos[2], pos[3]
            speed = math.hypot(vx, vy)
            if speed > MAX_SPEED:  # never faster than the rules allow
                vx, vy = vx * MAX_SPEED / speed, vy * MAX_SPEED / speed
            a["x"][slot], a["y"][slot], a["vx"][slot], a["vy"][slot] = x, y, vx, vy
            a["last_x"][p], a["last_y"][p] = a["x"][slot], a["y"][slot]  # no distance for the move

    def leave(self, world: World, eid: int) -> None:
        table = EntityTable(world)
        slot = table.slot_of(eid)
        a = world.arrays
        if slot < 0 or not a["is_player"][slot]:
            return
        table.despawn(eid)
        p = slot - int(world.meta[META_PLAYER_LO])
        a["ledger"][LEDGER_EXPORTED] += int(a["bal_metal"][p] + a["bal_crystal"][p])
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
        ev, vio = events.arrays(), events.violations.arrays()
        if "ledger" not in a:  # a world saved by an older version
            _ensure_books(world, self.history_rows)
        hist = (a["hist_x"], a["hist_y"], a["hist_tick"], a["hist_id"], a["hist_since"])
        ledger = a["ledger"]
        startales_inputs(
            inputs.eid, inputs.seq, inputs.client_tick, inputs.dx, inputs.dy, inputs.action, inputs.arg,
            inputs.arg2, inputs.arg3, inputs.txn, inputs.accepted, np.int64(inputs.n), meta, alive, gen, isp,
            a["last_seq"], a["fp_pace"], self.limits, x, y, tx, ty, deposit, a["bal_metal"], a["bal_crystal"],
            a["bal_dirty"], a["buildings"], a["achievements"], a["harvest_target"], a["hv_tat"], a["txn_last"],
            a["txn_to"], a["txn_res"], a["txn_amount"], a["txn_dups"], ledger, a["kind"], a["scans"], *hist, *ev,
            *vio,
        )  # fmt: skip
        npc_turns(meta, alive, vx, vy, self._drone_speed, P_TURN)
        startales_move(x, y, vx, vy, tx, ty, a["kind"], alive, self.dt, self._w, self._h, self._accel, self._max_speed)
        startales_rules(
            meta, alive, gen, isp, x, y, a["planet_res"], deposit, a["bal_metal"], a["bal_crystal"],
            a["bal_dirty"], a["buildings"], a["achievements"], a["visited"], a["visited_n"],
            a["distance"], a["harvested"], a["harvest_target"], a["last_x"], a["last_y"], *ev,
        )  # fmt: skip
        startales_books(meta, alive, gen, isp, vx, vy, deposit, a["bal_metal"], a["bal_crystal"], ledger, *vio)
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
