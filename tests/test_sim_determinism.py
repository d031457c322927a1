import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.registry import game_names, make_game
from sim.statehash import state_hash
from sim.world import World

GAMES = game_names()

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from sim.registry import make_game
from sim.statehash import state_hash

game_name, seed = sys.argv[1], int(sys.argv[2])
cfg = {"startales": {"planets": 12, "drones": 300, "max_players": 8},
       "wander": {"npcs": 300, "max_players": 8}, "arena": {"shots": 64, "max_players": 8}}[game_name]
game = make_game(game_name, cfg)
world = game.create_world(seed)
players = [game.join(world) for _ in range(4)]
inputs, events = game.input_batch(64), game.event_buffer(1024)
emitted = 0
for t in range(240):
    for k, eid in enumerate(players):
        if (t + k) % 3 == 0:
            dx = ((t * 7 + k * 13) % 11 - 5) / 8.0
            dy = ((t * 5 + k * 3) % 9 - 4) / 8.0
            if game_name == "arena":  # dx, dy, aim, fire, a hit claim on the next ship (inputs in spec order)
                values = (dx, dy, 1.0, 0.0, int(t % 5 == 0), players[(k + 1) % 4] if t % 10 == 0 else 0)
            else:  # a game with fewer inputs ignores the rest
                values = (dx, dy, (t // 3 + k) % 4, 0)
            inputs.add(eid, t + 1, t, *values, bound=4)
    events.clear()
    game.step(world, inputs, events)
    emitted += events.n
    inputs.clear()
    if t == 100:
        game.leave(world, players[1])
        players[1] = game.join(world)
print(emitted)
print(state_hash(world))
"""


def _run(game: str, seed: int) -> tuple[int, int]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, game, str(seed)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=True,
    )  # fmt: skip
    events, digest = proc.stdout.strip().splitlines()[-2:]
    return int(events), int(digest)


@pytest.mark.parametrize("game", GAMES)
def test_two_processes_same_hash_and_seed_matters(game: str) -> None:
    a, b, c = _run(game, 2024), _run(game, 2024), _run(game, 2025)
    assert a == b
    assert a[1] != c[1]
    if make_game(game).actions:  # its actions ran (fired, claimed, were refused), not only its moves
        assert a[0] > 0


def test_state_hash_covers_names_dtypes_shapes_and_bytes() -> None:
    w = World(4, 1)
    w.add("a", np.int32)
    base = state_hash(w)
    assert state_hash(w.copy()) == base
    w2 = World(4, 1)
    w2.add("b", np.int32)  # same bytes, other name
    assert state_hash(w2) != base
    w3 = World(4, 1)
    w3.add("a", np.uint32)  # same bytes, other dtype
    assert state_hash(w3) != base
    w4 = World(4, 1)
    w4.arrays["a"] = np.zeros((2, 2), dtype=np.int32)  # same bytes, other shape
    assert state_hash(w4) != base
    w.arrays["a"][3] = 1
    assert state_hash(w) != base
    w.arrays["a"][3] = 0
    w.tick = 1
    assert state_hash(w) != base


def test_state_hash_every_byte_matters() -> None:
    w = World(37, 5)  # odd sizes: exercises the 4-lane loop, single words and the byte tail
    arr = w.add("v", np.uint8)
    base = state_hash(w)
    seen = {base}
    for i in range(len(arr)):
        arr[i] ^= 0x40
        seen.add(state_hash(w))
        arr[i] ^= 0x40
    assert len(seen) == len(arr) + 1
    assert state_hash(w) == base


@pytest.mark.parametrize("name", GAMES)
def test_warmup_compiles_everything_the_tick_needs(name: str) -> None:
    from sim import entities, history, movement, npc, rng, rows, statehash, validate
    from sim.games import arena, wander
    from sim.games.startales import inputs as st_inputs
    from sim.games.startales import rules as st_rules

    game = make_game(name, {"max_players": 16})
    game.warmup()
    mods = (entities, history, movement, npc, rng, rows, statehash, validate, arena, wander, st_inputs, st_rules)
    kernels = [obj for m in mods for obj in vars(m).values() if hasattr(obj, "signatures")]
    before = {id(k): len(k.signatures) for k in kernels}
    world = game.create_world(77)
    p = game.join(world)
    inputs, events_ = game.input_batch(16), game.event_buffer(64)
    for t in range(3):
        inputs.add(p, t + 1, t, 0.1, 0.2, t % 4, 0)
        game.step(world, inputs, events_)
        inputs.clear()
    game.replicate(world, np.zeros(game.capacity, dtype=game.record_dtype))
    state_hash(world)
    assert {id(k): len(k.signatures) for k in kernels} == before
