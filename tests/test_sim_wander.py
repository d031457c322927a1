"""Wander: the peer benchmark scenario on the game API."""

import numpy as np
import pytest

from sim.events import EV_REFUSED, REF_DEAD, REF_NONFINITE, REF_RANGE, REF_STALE_SEQ
from sim.games.wander import Wander
from tests.worlds import Driver

CFG = {"npcs": 200, "max_players": 8}


@pytest.fixture
def d() -> Driver:
    return Driver("wander", CFG)


def test_record_dtype_capacity_and_welcome(d: Driver) -> None:
    assert d.game.record_dtype.names == ("id", "x", "y", "vx", "vy", "hp")
    assert d.game.record_dtype.itemsize == 21
    assert d.game.capacity == 208
    assert Wander().capacity == 1000 + 2048
    assert set(d.game.welcome_constants()) == {
        "width", "height", "npc_speed", "player_speed", "p_turn", "tick_rate", "npcs", "max_players",
    }  # fmt: skip
    spec = d.game.wire_spec()
    assert spec["inputs"] == [["dx", "f32", -1.0, 1.0], ["dy", "f32", -1.0, 1.0]]
    assert spec["move"] == {"rule": "velocity", "in": ["dx", "dy"], "bounds": [0.0, 0.0, 1000.0, 1000.0], "speed": 5.0}


def test_refusals(d: Driver) -> None:
    p = d.join()
    nan, inf = float("nan"), float("inf")
    rows = [
        (p, 1, 1.0, 0.0),  # ok
        (p, 1, 0.5, 0.0),  # seq == last
        (p, 0, 0.5, 0.0),  # seq < last
        (p, 2, nan, 0.0),
        (p, 3, 0.0, inf),
        (p, 4, 1.0, 1.0),  # dx²+dy² = 2 > 1
        (p, 5, 1.0, 0.001),  # just over 1: no tolerance
        (p ^ (1 << 20), 6, 0.0, 0.0),  # wrong generation
        (5, 6, 0.0, 0.0),  # an NPC is not a player
    ]
    for eid, seq, dx, dy in rows:
        d.send(eid, seq, 0, dx, dy)
    ev = d.step()
    assert d.accepted.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    refused = [(e[2], e[3]) for e in ev if e[0] == EV_REFUSED]
    assert refused == [
        (1, REF_STALE_SEQ), (2, REF_STALE_SEQ), (3, REF_NONFINITE), (4, REF_NONFINITE),
        (5, REF_RANGE), (6, REF_RANGE), (7, REF_DEAD), (8, REF_DEAD),
    ]  # fmt: skip
    assert d.a["last_seq"][d.slot(p)] == 1
    assert d.a["vx"][d.slot(p)] == np.float32(5.0)


def test_player_velocity_is_input_times_five_and_clamped(d: Driver) -> None:
    p = d.join()
    s, a = d.slot(p), d.a
    assert a["hp"][s] == 100
    d.send(p, 1, 0, 0.6, -0.5)
    d.step()
    assert a["vx"][s] == np.float32(0.6) * np.float32(5) and a["vy"][s] == np.float32(-2.5)
    # latest accepted input wins; a refused one leaves the velocity alone
    d.send(p, 2, 0, -1.0, 0.0)
    d.send(p, 3, 0, 1.0, 1.0)
    d.step()
    assert a["vx"][s] == -5.0 and a["vy"][s] == 0.0
    a["x"][s] = 0.01
    d.step()
    assert a["x"][s] == 0.0  # clamped, not reflected
    assert a["vx"][s] == -5.0


def test_npcs_stay_in_bounds_and_turn(d: Driver) -> None:
    a = d.a
    v0 = a["vx"][:200].copy()
    d.step(3000)
    x, y = a["x"][:200], a["y"][:200]
    assert (x >= 0).all() and (x <= 1000).all() and (y >= 0).all() and (y <= 1000).all()
    speed = np.hypot(a["vx"][:200].astype(np.float64), a["vy"][:200].astype(np.float64))
    assert np.allclose(speed, 5.0, rtol=1e-5)
    assert (a["vx"][:200] != v0).mean() > 0.9  # p = 1/120 over 3000 ticks: almost all turned
    assert d.tick == 3000


def test_reflect_flips_velocity(d: Driver) -> None:
    a = d.a
    a["x"][0], a["vx"][0], a["y"][0], a["vy"][0] = np.float32(999.95), np.float32(5.0), 500, 0
    d.step()
    if a["vy"][0] == 0:  # NPC 0 did not turn this tick (p = 1/120)
        assert a["vx"][0] == -5.0
        assert a["x"][0] == np.float32(2000) - (np.float32(999.95) + np.float32(5) * np.float32(1 / 60))


def test_join_leave_replicate(d: Driver) -> None:
    p1, p2 = d.join(), d.join()
    out = d.replicate()
    assert len(out) == 202
    assert out["id"][200] == p1 and out["id"][201] == p2 and out["hp"][201] == 100
    d.leave(p1)
    d.leave(p1)  # stale: ignored
    d.leave(3)  # an NPC: ignored
    assert len(d.replicate()) == 201
    p3 = d.join()
    assert d.slot(p3) == d.slot(p1) and p3 != p1
    d.send(p1, 1, 0, 0.0, 0.0)
    d.send(p3, 1, 0, 0.0, 0.0)
    d.step()
    assert d.accepted.tolist() == [0, 1]
