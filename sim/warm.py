"""Warm-up: drive a tiny world of a game through its tick so every kernel it runs is compiled
(or loaded from the cache) before the first real tick."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sim.entities import id_gen, id_slot, make_id, resolve
from sim.rng import rand_f32_01, rand_f64_01, rand_u64
from sim.statehash import state_hash

if TYPE_CHECKING:
    from sim.game_api import Game


def exercise(game: Game) -> None:
    world = game.create_world(1)
    p1, p2 = game.join(world), game.join(world)
    inputs, events = game.input_batch(64), game.event_buffer(128)
    nan = float("nan")
    move = game.move.keys if game.move is not None else ()
    names = [i.name for i in game.inputs]
    actions = [*sorted(game.actions), 99]
    for tick in range(3):
        seq = 10 * tick
        for k, action in enumerate(actions):
            seq += 1
            values = [0.0 if i.type == "f32" else 0 for i in game.inputs]
            if "action" in names:
                values[names.index("action")] = action
            for j, name in enumerate(names):
                if name in move:
                    values[j] = 0.5 if (j + k) % 2 else -0.25
            inputs.add(p1 if k % 2 else p2, seq, tick, *values, bound=k % 3)
        bad = [nan if n in move else 0 for n in names], [1.0 if n in move else 0 for n in names]
        for values in bad:
            inputs.add(p1, seq + 5, tick, *values)
        inputs.add(p1, 1, tick)  # stale seq
        inputs.add(12345, 1, tick)  # stale id
        events.clear()
        game.step(world, inputs, events)
        inputs.clear()
    game.replicate(world, np.zeros(game.capacity, dtype=game.record_dtype))
    game.always_relevant(world)
    state_hash(world)
    game.leave(world, p2)
    a = world.arrays
    resolve(np.uint32(p1), a["alive"], a["generation"])
    id_slot(make_id(1, 1)) + id_gen(p1)
    rand_u64(1, 2, 3, 4)
    rand_f64_01(1, 2, 3, 4) + rand_f32_01(1, 2, 3, 4)
