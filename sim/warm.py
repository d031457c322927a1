"""Warm-up: drive a tiny world of a game through every code path so every kernel is compiled
(or loaded from the cache) before the first real tick."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sim.entities import id_gen, id_slot, make_id, resolve
from sim.events import EventBuffer
from sim.inputs import InputBatch
from sim.rng import rand_f32_01, rand_f64_01, rand_u64
from sim.statehash import state_hash

if TYPE_CHECKING:
    from sim.game_api import Game


def exercise(game: Game) -> None:
    world = game.create_world(1)
    p1, p2 = game.join(world), game.join(world)
    inputs, events = InputBatch(32), EventBuffer(64)
    nan = float("nan")
    script = [
        (p1, 1, 0.5, 0.0, 0),
        (p2, 1, 0.0, -0.5, 1),  # harvest (games without actions ignore or refuse it)
        (p1, 2, 0.0, 0.0, 2),  # build
        (p1, 3, 0.0, 0.0, 3),  # stop
        (p2, 2, 0.0, 0.0, 99),  # unknown action
        (p1, 3, 0.1, 0.1, 0),  # stale seq
        (p1, 4, nan, 0.0, 0),  # non-finite
        (p1, 5, 1.0, 1.0, 0),  # out of range
        (12345, 1, 0.0, 0.0, 0),  # stale id
    ]
    for tick in range(3):
        for eid, seq, dx, dy, action in script:
            inputs.add(eid, seq + 10 * tick, tick, dx, dy, action, 0)
        events.clear()
        game.step(world, inputs, events)
        inputs.clear()
    game.replicate(world, np.zeros(game.capacity, dtype=game.record_dtype))
    state_hash(world)
    game.leave(world, p2)
    a = world.arrays
    resolve(np.uint32(p1), a["alive"], a["generation"])
    id_slot(make_id(1, 1)) + id_gen(p1)
    rand_u64(1, 2, 3, 4)
    rand_f64_01(1, 2, 3, 4) + rand_f32_01(1, 2, 3, 4)
