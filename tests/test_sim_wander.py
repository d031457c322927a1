import numpy as np
import pytest

from sim.events import EV_REFUSED, REF_DEAD, REF_NONFINITE, REF_RANGE, REF_STALE_SEQ, EventBuffer
from sim.games.wander import RECORD_DTYPE, WanderGame
from sim.inputs import InputBatch
from sim.world import World


@pytest.fixture
def game() -> WanderGame:
    return WanderGame({"npcs": 200, "max_players": 8})


def _step(game: WanderGame, world: World, rows: list[tuple]) -> tuple[np.ndarray, EventBuffer]:
    inputs, events = InputBatch(64), EventBuffer(64)
    for r in rows:
        assert inputs.add(*r)
    game.step(world, inputs, events)
    return inputs.accepted[: inputs.n].copy(), events


def test_record_dtype_and_capacity(game: WanderGame) -> None:
    assert RECORD_DTYPE.itemsize == 21
    assert game.capacity == 208
    assert WanderGame().capacity == 1000 + 2048
    assert set(game.constants()) == {"width", "height", "npc_speed", "player_speed", "tick_rate", "npcs"}


def test_refusals(game: WanderGame) -> None:
    world = game.create_world(1)
    p = game.join(world)
    nan, inf = float("nan"), float("inf")
    acc, ev = _step(
        game,
        world,
        [
            (p, 1, 0, 1.0, 0.0),  # ok
            (p, 1, 0, 0.5, 0.0),  # seq == last
            (p, 0, 0, 0.5, 0.0),  # seq < last
            (p, 2, 0, nan, 0.0),
            (p, 3, 0, 0.0, inf),
            (p, 4, 0, 1.0, 1.0),  # dx²+dy² = 2 > 1
            (p, 5, 0, 1.0, 0.001),  # just over 1: no tolerance
            (p ^ (1 << 20), 6, 0, 0.0, 0.0),  # wrong generation
            (5, 6, 0, 0.0, 0.0),  # an NPC is not a player
        ],
    )
    assert acc.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    refused = [(e[2], e[3]) for e in ev.rows() if e[0] == EV_REFUSED]
    assert refused == [
        (1, REF_STALE_SEQ), (2, REF_STALE_SEQ), (3, REF_NONFINITE), (4, REF_NONFINITE),
        (5, REF_RANGE), (6, REF_RANGE), (7, REF_DEAD), (8, REF_DEAD),
    ]  # fmt: skip
    slot = p & 0xFFFFF
    assert world.arrays["last_seq"][slot] == 1
    assert world.arrays["vx"][slot] == np.float32(5.0)


def test_player_velocity_is_input_times_five_and_clamped(game: WanderGame) -> None:
    world = game.create_world(2)
    p = game.join(world)
    slot = p & 0xFFFFF
    a = world.arrays
    assert a["hp"][slot] == 100
    _step(game, world, [(p, 1, 0, 0.6, -0.5)])
    assert a["vx"][slot] == np.float32(0.6) * np.float32(5) and a["vy"][slot] == np.float32(-2.5)
    # latest accepted input wins; a refused one leaves the velocity alone
    _step(game, world, [(p, 2, 0, -1.0, 0.0), (p, 3, 0, 1.0, 1.0)])
    assert a["vx"][slot] == -5.0 and a["vy"][slot] == 0.0
    a["x"][slot] = 0.01
    _step(game, world, [])
    assert a["x"][slot] == 0.0  # clamped, not reflected
    assert a["vx"][slot] == -5.0


def test_npcs_stay_in_bounds_and_turn(game: WanderGame) -> None:
    world = game.create_world(3)
    a = world.arrays
    v0 = a["vx"][:200].copy()
    inputs, events = InputBatch(4), EventBuffer(4)
    for _ in range(3000):
        game.step(world, inputs, events)
    x, y = a["x"][:200], a["y"][:200]
    assert (x >= 0).all() and (x <= 1000).all() and (y >= 0).all() and (y <= 1000).all()
    speed = np.hypot(a["vx"][:200].astype(np.float64), a["vy"][:200].astype(np.float64))
    assert np.allclose(speed, 5.0, rtol=1e-5)
    assert (a["vx"][:200] != v0).mean() > 0.9  # p = 1/120 over 3000 ticks: almost all turned
    assert world.tick == 3000


def test_reflect_flips_velocity(game: WanderGame) -> None:
    world = game.create_world(4)
    a = world.arrays
    a["x"][0], a["vx"][0], a["y"][0], a["vy"][0] = np.float32(999.95), np.float32(5.0), 500, 0
    game.step(world, InputBatch(1), EventBuffer(1))
    if a["vy"][0] == 0:  # NPC 0 did not turn this tick (p = 1/120)
        assert a["vx"][0] == -5.0
        assert a["x"][0] == np.float32(2000) - (np.float32(999.95) + np.float32(5) * np.float32(1 / 60))


def test_join_leave_replicate(game: WanderGame) -> None:
    world = game.create_world(5)
    p1, p2 = game.join(world), game.join(world)
    out = np.zeros(game.capacity, dtype=game.record_dtype)
    assert game.replicate(world, out) == 202
    assert out["id"][200] == p1 and out["id"][201] == p2 and out["hp"][201] == 100
    game.leave(world, p1)
    game.leave(world, p1)  # stale: ignored
    game.leave(world, 3)  # an NPC: ignored
    assert game.replicate(world, out) == 201
    p3 = game.join(world)
    assert p3 & 0xFFFFF == p1 & 0xFFFFF and p3 != p1
    acc, _ = _step(game, world, [(p1, 1, 0, 0.0, 0.0), (p3, 1, 0, 0.0, 0.0)])
    assert acc.tolist() == [0, 1]
