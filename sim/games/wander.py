"""Wander: the peer benchmark scenario (the one Colyseus and Nakama publish figures for).

A 1000×1000 world; NPCs start at uniform random positions and headings from the seed, move at
5 u/s, turn to a uniform heading with p = 1/120 per tick, and bounce off the bounds. One player
per client: spawned uniformly (keyed on the spawn counter), hp 100, velocity = (dx, dy) × 5 u/s
from its latest accepted input, position clamped to the world. Everything but the NPCs' start is
the engine's: the shared input rules, the velocity move, the NPC systems of sim/npc.py.
"""

from __future__ import annotations

import numpy as np

from sim.brain import BotView, Brain
from sim.entities import MAX_CAPACITY
from sim.game_api import Game, bind
from sim.movement import drift
from sim.npc import headings_to_velocity, npc_turns
from sim.rng import STREAM_NPC_HEADING, STREAM_NPC_X, STREAM_NPC_Y, uniform_f64
from sim.spec import Component, Draw, Fixed, Input, Style, Velocity, Whole
from sim.world import World


class WanderBrain(Brain):
    """The generic random walk, plus 1 % deliberately illegal (1, 1) inputs (the peer scenario's)."""

    illegal = 0.01

    def next_input(self, i: int, view: BotView | None) -> dict[str, float | int]:
        if self.rand.random() < self.illegal:
            return {"dx": 1.0, "dy": 1.0}
        return super().next_input(i, view)


class Wander(Game):
    name = "wander"
    components = (
        Component("x", "f4", replicate=Fixed(0, "width", 1 / 64)),
        Component("y", "f4", replicate=Fixed(0, "height", 1 / 64)),
        Component("vx", "f4", replicate=Fixed(-8, 8, 1 / 256)),
        Component("vy", "f4", replicate=Fixed(-8, 8, 1 / 256)),
        Component("hp", "u1", 100, replicate=Whole(0, 255)),
    )
    inputs = (Input("dx", "f32", -1, 1), Input("dy", "f32", -1, 1))
    config = {"npcs": (1000, 0, MAX_CAPACITY // 2), "max_players": (2048, 1, MAX_CAPACITY // 2)}
    constants = {"width": 1000.0, "height": 1000.0, "npc_speed": 5.0, "player_speed": 5.0, "p_turn": 1 / 120}
    npcs = "npcs"
    view_radius = 100.0
    move = Velocity(("dx", "dy"), speed="player_speed")
    systems = (bind(npc_turns, speed="npc_speed"), drift)
    draw = Draw(default=Style("circle", "#7fb27f", 2.0, "npc"))
    brain = WanderBrain
    warm_config = {"npcs": 8, "max_players": 4}

    def on_create(self, world: World) -> None:
        lo, hi, s, a = self.npc_lo, self.npc_hi, world.seed, world.arrays
        n = hi - lo
        a["x"][lo:hi] = (uniform_f64(n, s, STREAM_NPC_X) * self.constants["width"]).astype(np.float32)
        a["y"][lo:hi] = (uniform_f64(n, s, STREAM_NPC_Y) * self.constants["height"]).astype(np.float32)
        speed = self.constants["npc_speed"]
        a["vx"][lo:hi], a["vy"][lo:hi] = headings_to_velocity(uniform_f64(n, s, STREAM_NPC_HEADING), speed)

