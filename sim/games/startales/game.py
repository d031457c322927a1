"""Startales: the reference game — a 2D space campaign generated from a seed.

Entities (one table): planets (kind 0, static, a resource type and an int64 deposit), NPC drones
(kind 1, drift and turn like wander's NPCs) and player ships (kind 2, the engine's thrust move).
Slots: planets [0, P), drones [P, P+D), players [P+D, capacity); per-player fields are indexed by
``slot - P - D``.

Actions (input ``action``, wire key "a"; constants.py): 0 none, 1 HARVEST (``arg`` = planet index
+ 1, or 0 for the nearest planet with a deposit within HARVEST_RANGE; else REF_NO_TARGET), 2 BUILD
(BUILD_COST_* or REF_UNAFFORDABLE), 3 STOP (harvesting), 4 SCAN (lag-compensated: tag the drone
whose id is ``arg`` — the uint32 id's bits as an int32, see `constants.scan_arg` — if it was within
SCAN_RANGE of the ship at tick ``client_tick``, the tick the client was displaying; see
docs/prediction.md), 5 GIFT (give ``arg3`` units of resource ``arg2`` to the player ship ``arg``,
idempotent by the client's transaction id ``txn``), 6 CLAIM (the client claims achievement
``arg``; checked against state); any other value is REF_BAD_ACTION. An input is atomic: refused
means no effect at all (no thrust, no seq update). Validators and their violations: inputs.py.

SCAN refusals, in this order: REF_NO_TARGET (the target is not a live drone now), REF_REWIND
(``client_tick`` is in the future or further back than the input may rewind: ``max_rewind`` and its
connection's bound, sim/history.py), REF_NO_TARGET (the history holds no position of that drone
at ``client_tick``), REF_OUT_OF_REACH (farther than SCAN_RANGE from the ship's current position
at ``client_tick``). A hit increments the player's ``scans`` and emits EV_SCANNED (a = target id,
b = rewind in ticks).

Each tick: inputs (validated) → drone turns → drift → ships move → rules (distance, visits,
harvest, achievements, coalesced EV_BALANCE events) → the books (state validators, rules.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sim.entities import MAX_CAPACITY, EntityTable
from sim.game_api import Game, bind
from sim.games.startales.brain import StartalesBrain
from sim.games.startales.constants import (
    ACH_BUILDINGS,
    ACH_DISTANCE,
    ACH_VISITS,
    BUILD_COST_CRYSTAL,
    BUILD_COST_METAL,
    DEPOSIT_MAX,
    DEPOSIT_MIN,
    DRONE_SPEED,
    EV_BUILT,
    EV_RECEIVED,
    EV_SCANNED,
    EV_TRANSFER,
    HARVEST_PER_TICK,
    HARVEST_RANGE,
    HARVEST_REQ_BURST,
    HARVEST_REQ_PERIOD_S,
    KIND_DRONE,
    KIND_PLANET,
    KIND_SHIP,
    LEDGER_EXPORTED,
    LEDGER_GENESIS,
    LEDGER_IMPORTED,
    LEDGER_LEN,
    MAX_ACCEL,
    MAX_PLANETS,
    MAX_REWIND_SECONDS,
    MAX_SPEED,
    P_TURN,
    PLANET_MARGIN,
    SCAN_RANGE,
    VISIT_RADIUS,
)
from sim.games.startales.inputs import take_actions
from sim.games.startales.rules import books, rules
from sim.movement import drift
from sim.npc import headings_to_velocity, npc_turns
from sim.rng import (
    STREAM_NPC_HEADING,
    STREAM_NPC_X,
    STREAM_NPC_Y,
    STREAM_PLANET_DEPOSIT,
    STREAM_PLANET_RES,
    STREAM_PLANET_X,
    STREAM_PLANET_Y,
    uniform_f64,
)
from sim.spec import (
    MOVE_PLAYERS,
    Component,
    Draw,
    Fixed,
    Input,
    LagComp,
    Player,
    Style,
    Table,
    Thrust,
    Whole,
)
from sim.world import World

I32 = (-(2**31), 2**31 - 1)


class Startales(Game):
    name = "startales"
    components = (
        Component("kind", "u1", replicate=Whole(0, 255)),
        Component("x", "f4", replicate=Fixed(0, "width", 1 / 16)),
        Component("y", "f4", replicate=Fixed(0, "height", 1 / 16)),
        Component("vx", "f4", replicate=Fixed(-320, 320, 1 / 64)),
        Component("vy", "f4", replicate=Fixed(-320, 320, 1 / 64)),
    )
    players = (
        Player("bal_metal", "i8"),
        Player("bal_crystal", "i8"),
        Player("bal_dirty", "u1"),  # bit r: balance r changed this tick (always 0 between ticks)
        Player("buildings", "i4"),
        Player("achievements", "u4"),
        Player("visited", "u8"),
        Player("visited_n", "i4"),
        Player("distance", "f8"),
        Player("harvested", "i8"),  # units ever harvested
        Player("harvest_target", "i4"),  # planet index + 1, 0 = not harvesting
        Player("last_x", "f4"),  # position at the end of the previous rules pass
        Player("last_y", "f4"),
        Player("scans", "i4"),  # successful scans
        Player("hv_tat", "i8"),  # harvest-request GCRA: theoretical arrival tick
        Player("txn_last", "i8"),  # the last applied transfer, for idempotent retries
        Player("txn_to", "u4"),
        Player("txn_res", "i4"),
        Player("txn_amount", "i8"),
        Player("txn_dups", "i4"),
    )
    tables = (
        Table("planet_res", "u1", "planets"),
        Table("planet_deposit", "i8", "planets"),
        Table("ledger", "i8", LEDGER_LEN),  # the resource books (constants.py LEDGER_*)
    )
    inputs = (
        Input("dx", "f32", -1, 1),
        Input("dy", "f32", -1, 1),
        Input("action", "i32", 0, 255, key="a"),
        Input("arg", "i32", *I32, key="g"),
        Input("arg2", "i32", *I32, key="g2"),
        Input("arg3", "i32", *I32, key="g3"),
        Input("txn", "u32", 0, 2**32 - 1, key="tx"),
    )
    config = {
        "width": (4000, 100, 1_000_000),
        "height": (4000, 100, 1_000_000),
        "planets": (48, 0, MAX_PLANETS),
        "drones": (200, 0, MAX_CAPACITY // 2),
        "max_players": (1024, 1, MAX_CAPACITY // 4),
    }
    constants = {
        "max_accel": MAX_ACCEL,
        "max_speed": MAX_SPEED,
        "drone_speed": DRONE_SPEED,
        "p_turn": P_TURN,
        "harvest_range": HARVEST_RANGE,
        "harvest_per_tick": HARVEST_PER_TICK,
        "visit_radius": VISIT_RADIUS,
        "build_cost_metal": BUILD_COST_METAL,
        "build_cost_crystal": BUILD_COST_CRYSTAL,
        "ach_visits": ACH_VISITS,
        "ach_buildings": ACH_BUILDINGS,
        "ach_distance": ACH_DISTANCE,
        "scan_range": SCAN_RANGE,
    }
    statics = "planets"
    npcs = "drones"
    view_radius = 600.0
    relevant = ("kind", KIND_PLANET)  # the map players navigate by
    move = Thrust(("dx", "dy"), accel="max_accel", max_speed="max_speed")
    lag = LagComp("npcs", MAX_REWIND_SECONDS)
    on_inputs = take_actions
    systems = (bind(npc_turns, speed="drone_speed"), drift, MOVE_PLAYERS, rules, books)
    events = {EV_BUILT: "built", EV_SCANNED: "scanned", EV_TRANSFER: "transfer", EV_RECEIVED: "received"}
    actions = {1: "harvest", 2: "build", 3: "stop", 4: "scan", 5: "gift", 6: "claim"}
    draw = Draw(
        field="kind",
        styles={
            KIND_PLANET: Style("circle", "#4a90d9", 40.0, "planet"),
            KIND_DRONE: Style("triangle", "#c0c0c0", 10.0, "drone"),
            KIND_SHIP: Style("ship", "#e0603a", 14.0, "ship"),
        },
        player=Style("ship", "#ffffff", 16.0, "you"),
    )
    brain = StartalesBrain
    resources = ("bal_metal", "bal_crystal")
    durable = ("buildings", "achievements", "txn_last")
    warm_config = {"planets": 4, "drones": 8, "max_players": 4}

    def derive(self, cfg: Mapping[str, int]) -> Mapping[str, Any]:
        hv_period = max(1, round(HARVEST_REQ_PERIOD_S * cfg["tick_rate"]))
        return {"hv_period": hv_period, "hv_burst": HARVEST_REQ_BURST}

    def on_create(self, world: World) -> None:
        P, D = self.npc_lo, self.npc_hi - self.npc_lo
        w, h = float(self.cfg["width"]), float(self.cfg["height"])
        a, s = world.arrays, world.seed
        a["kind"][:P] = KIND_PLANET
        mw, mh = w - 2 * PLANET_MARGIN, h - 2 * PLANET_MARGIN
        a["x"][:P] = (PLANET_MARGIN + uniform_f64(P, s, STREAM_PLANET_X) * mw).astype(np.float32)
        a["y"][:P] = (PLANET_MARGIN + uniform_f64(P, s, STREAM_PLANET_Y) * mh).astype(np.float32)
        a["planet_res"][:] = uniform_f64(P, s, STREAM_PLANET_RES) < 0.5
        span = DEPOSIT_MAX - DEPOSIT_MIN + 1
        a["planet_deposit"][:] = DEPOSIT_MIN + np.floor(uniform_f64(P, s, STREAM_PLANET_DEPOSIT) * span)
        a["kind"][P : P + D] = KIND_DRONE
        a["x"][P : P + D] = (uniform_f64(D, s, STREAM_NPC_X) * w).astype(np.float32)
        a["y"][P : P + D] = (uniform_f64(D, s, STREAM_NPC_Y) * h).astype(np.float32)
        heading = uniform_f64(D, s, STREAM_NPC_HEADING)
        a["vx"][P : P + D], a["vy"][P : P + D] = headings_to_velocity(heading, DRONE_SPEED)
        a["ledger"][LEDGER_GENESIS] = int(a["planet_deposit"].sum())

    def on_join(self, world: World, slot: int) -> None:
        super().on_join(world, slot)
        a, p = world.arrays, slot - self.player_lo
        a["kind"][slot] = KIND_SHIP
        a["last_x"][p], a["last_y"][p] = a["x"][slot], a["y"][slot]

    def on_leave(self, world: World, slot: int) -> None:
        a, p = world.arrays, slot - self.player_lo
        a["ledger"][LEDGER_EXPORTED] += int(a["bal_metal"][p] + a["bal_crystal"][p])

    def restore_progress(self, world: World, eid: int, progress: Mapping[str, object]) -> None:
        """The base restore (resources, durable fields, position and velocity); the resources enter the
        books as imported."""
        slot = EntityTable(world).slot_of(eid)
        if slot < 0:
            return
        a, p = world.arrays, slot - self.player_lo
        before = int(a["bal_metal"][p] + a["bal_crystal"][p])
        super().restore_progress(world, eid, progress)
        a["ledger"][LEDGER_IMPORTED] += int(a["bal_metal"][p] + a["bal_crystal"][p]) - before
        a["last_x"][p], a["last_y"][p] = a["x"][slot], a["y"][slot]  # a restored position is no distance
