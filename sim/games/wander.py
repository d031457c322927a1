"""Wander: the peer benchmark scenario.

A 1000×1000 world; NPCs start at uniform random positions and headings from the seed, move at
5 u/s, turn to a uniform heading with p = 1/120 per tick, and reflect at the bounds. One player per
client: spawned uniformly (keyed on the spawn counter), hp 100, velocity = (dx, dy) × 5 u/s from
its latest accepted input, position clamped to the world.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np
from numba import njit

from sim.entities import MAX_CAPACITY, EntityTable, add_entity_arrays
from sim.events import EV_REFUSED, EventBuffer, emit
from sim.games.config import read_config
from sim.inputs import InputBatch
from sim.movement import wander_move
from sim.npc import headings_to_velocity, npc_turns
from sim.pacing import add_pace, pace_limits, reset_pace
from sim.rng import STREAM_NPC_HEADING, STREAM_NPC_X, STREAM_NPC_Y, STREAM_SPAWN_X, STREAM_SPAWN_Y, uniform_f64
from sim.scalars import Int
from sim.validate import validate_input
from sim.warm import exercise
from sim.world import META_NPC_HI, META_NPC_LO, META_PLAYER_LO, META_TICK, World

WIDTH: Final = 1000.0
HEIGHT: Final = 1000.0
NPC_SPEED: Final = 5.0
PLAYER_SPEED: Final = 5.0
P_TURN: Final = 1.0 / 120.0
HP_START: Final = 100

RECORD_DTYPE: Final = np.dtype([("id", "<u4"), ("x", "<f4"), ("y", "<f4"), ("vx", "<f4"), ("vy", "<f4"), ("hp", "u1")])

CONFIG_SPEC: Final = {
    "npcs": (1000, 0, MAX_CAPACITY // 2),
    "max_players": (2048, 1, MAX_CAPACITY // 2),
    "tick_rate": (60, 1, 1000),
}


@njit(cache=True)
def wander_inputs(
    in_eid: np.ndarray,
    in_seq: np.ndarray,
    in_client_tick: np.ndarray,
    in_dx: np.ndarray,
    in_dy: np.ndarray,
    accepted: np.ndarray,
    n: Int,
    alive: np.ndarray,
    generation: np.ndarray,
    is_player: np.ndarray,
    last_seq: np.ndarray,
    pace: np.ndarray,
    burst: Int,
    margin: Int,
    now: Int,
    vx: np.ndarray,
    vy: np.ndarray,
    speed: np.float32,
    ev_kind: np.ndarray,
    ev_eid: np.ndarray,
    ev_a: np.ndarray,
    ev_b: np.ndarray,
    ev_counts: np.ndarray,
    v_kind: np.ndarray,
    v_eid: np.ndarray,
    v_value: np.ndarray,
    v_limit: np.ndarray,
    v_counts: np.ndarray,
) -> None:
    """Validate (sim/validate.py: thrust range, pacing) and apply inputs in batch order; a refused
    input changes nothing but its event (and its violation, if it is evidence)."""
    for i in range(n):
        slot, reason = validate_input(
            in_eid[i], in_seq[i], in_client_tick[i], in_dx[i], in_dy[i], now, alive, generation, is_player,
            last_seq, pace, burst, margin, v_kind, v_eid, v_value, v_limit, v_counts,
        )  # fmt: skip
        if reason != 0:
            accepted[i] = 0
            emit(ev_kind, ev_eid, ev_a, ev_b, ev_counts, EV_REFUSED, in_eid[i], i, reason)
            continue
        accepted[i] = 1
        last_seq[slot] = in_seq[i]
        vx[slot] = in_dx[i] * speed
        vy[slot] = in_dy[i] * speed


class WanderGame:
    name: str = "wander"
    record_dtype: np.dtype = RECORD_DTYPE

    def __init__(self, config: Mapping[str, object] | None = None) -> None:
        cfg = read_config(config, CONFIG_SPEC, self.name)
        self.config = cfg
        self.npcs = cfg["npcs"]
        self.max_players = cfg["max_players"]
        self.tick_rate = cfg["tick_rate"]
        self.capacity = self.npcs + self.max_players
        self.dt = np.float32(1.0 / self.tick_rate)
        self._width = np.float32(WIDTH)
        self._height = np.float32(HEIGHT)
        self._npc_speed = np.float32(NPC_SPEED)
        self._player_speed = np.float32(PLAYER_SPEED)
        self._burst, self._margin = (np.int64(v) for v in pace_limits(self.tick_rate))

    def constants(self) -> dict[str, float | int | str]:
        return {
            "width": WIDTH,
            "height": HEIGHT,
            "npc_speed": NPC_SPEED,
            "player_speed": PLAYER_SPEED,
            "tick_rate": self.tick_rate,
            "npcs": self.npcs,
        }

    def create_world(self, seed: int) -> World:
        world = World(self.capacity, seed)
        add_entity_arrays(world)
        for name in ("x", "y", "vx", "vy"):
            world.add(name, np.float32)
        world.add("hp", np.uint8)
        meta = world.meta
        meta[META_NPC_LO], meta[META_NPC_HI], meta[META_PLAYER_LO] = 0, self.npcs, self.npcs
        n = self.npcs
        EntityTable(world).spawn_many(n, 0, n)
        a = world.arrays
        seed = world.seed
        a["x"][:n] = (uniform_f64(n, seed, STREAM_NPC_X) * WIDTH).astype(np.float32)
        a["y"][:n] = (uniform_f64(n, seed, STREAM_NPC_Y) * HEIGHT).astype(np.float32)
        a["vx"][:n], a["vy"][:n] = headings_to_velocity(uniform_f64(n, seed, STREAM_NPC_HEADING), NPC_SPEED)
        a["hp"][:n] = HP_START
        add_pace(world)
        return world

    def join(self, world: World) -> int:
        counter = world.spawn_counter
        eid = EntityTable(world).spawn(int(world.meta[META_PLAYER_LO]), world.capacity)
        slot = eid & 0xFFFFF
        a = world.arrays
        a["x"][slot] = np.float32(uniform_f64(1, world.seed, STREAM_SPAWN_X, counter)[0] * WIDTH)
        a["y"][slot] = np.float32(uniform_f64(1, world.seed, STREAM_SPAWN_Y, counter)[0] * HEIGHT)
        a["vx"][slot] = a["vy"][slot] = 0.0
        a["hp"][slot] = HP_START
        a["is_player"][slot] = 1
        a["last_seq"][slot] = 0
        reset_pace(world, slot)
        return eid

    def leave(self, world: World, eid: int) -> None:
        table = EntityTable(world)
        slot = table.slot_of(eid)
        a = world.arrays
        if slot < 0 or not a["is_player"][slot]:
            return
        table.despawn(eid)
        for name in ("x", "y", "vx", "vy", "hp", "is_player", "last_seq"):
            a[name][slot] = 0

    def step(self, world: World, inputs: InputBatch, events: EventBuffer) -> None:
        a = world.arrays
        meta = a["meta"]
        alive, vx, vy = a["alive"], a["vx"], a["vy"]
        if "fp_pace" not in a:  # a world saved by an older version
            add_pace(world)
        wander_inputs(
            inputs.eid, inputs.seq, inputs.client_tick, inputs.dx, inputs.dy, inputs.accepted, np.int64(inputs.n),
            alive, a["generation"], a["is_player"], a["last_seq"], a["fp_pace"], self._burst, self._margin,
            meta[META_TICK], vx, vy, self._player_speed, *events.arrays(), *events.violations.arrays(),
        )  # fmt: skip
        npc_turns(meta, alive, vx, vy, self._npc_speed, P_TURN)
        wander_move(a["x"], a["y"], vx, vy, alive, a["is_player"], self.dt, self._width, self._height)
        meta[META_TICK] += 1

    def replicate(self, world: World, out: np.ndarray) -> int:
        a = world.arrays
        idx = np.flatnonzero(a["alive"])
        n = len(idx)
        if len(out) < n:
            raise ValueError(f"replicate: out holds {len(out)} records, {n} needed")
        out["id"][:n] = (a["generation"][idx].astype(np.uint32) << 20) | idx.astype(np.uint32)
        for name in ("x", "y", "vx", "vy", "hp"):
            out[name][:n] = a[name][idx]
        return n

    def warmup(self) -> None:
        exercise(type(self)({"npcs": 8, "max_players": 4, "tick_rate": self.tick_rate}))
