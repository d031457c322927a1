import numpy as np
import pytest

from sim.movement import KIND_DRONE, KIND_PLANET, KIND_SHIP, startales_move, wander_move
from sim.reference import startales_move_ref, wander_move_ref

F = np.float32


def _state(n: int, seed: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {
        "x": r.uniform(-5, 1005, n).astype(F),
        "y": r.uniform(-5, 1005, n).astype(F),
        "vx": r.uniform(-400, 400, n).astype(F),
        "vy": r.uniform(-400, 400, n).astype(F),
        "tx": r.uniform(-0.7, 0.7, n).astype(F),
        "ty": r.uniform(-0.7, 0.7, n).astype(F),
        "alive": (r.random(n) < 0.9).astype(np.uint8),
        "is_player": (r.random(n) < 0.3).astype(np.uint8),
        "kind": r.choice([KIND_PLANET, KIND_DRONE, KIND_SHIP], n).astype(np.uint8),
    }


def _copy(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in s.items()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_wander_move_equals_reference(seed: int) -> None:
    s = _state(5000, seed)
    a, b = _copy(s), _copy(s)
    args = (F(1 / 60), F(1000), F(1000))
    for _ in range(20):
        wander_move(a["x"], a["y"], a["vx"], a["vy"], a["alive"], a["is_player"], *args)
        wander_move_ref(b["x"], b["y"], b["vx"], b["vy"], b["alive"], b["is_player"], *args)
    _assert_same(a, b)
    assert not np.array_equal(a["x"], s["x"])  # it moved
    live = a["alive"] == 1
    assert (a["x"][live] >= 0).all() and (a["x"][live] <= 1000).all()
    assert np.array_equal(a["x"][~live], s["x"][~live])  # dead untouched


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_startales_move_equals_reference(seed: int) -> None:
    s = _state(5000, seed)
    a, b = _copy(s), _copy(s)
    args = (F(1 / 60), F(1000), F(1000), F(200), F(300))
    for _ in range(20):
        startales_move(a["x"], a["y"], a["vx"], a["vy"], a["tx"], a["ty"], a["kind"], a["alive"], *args)
        startales_move_ref(b["x"], b["y"], b["vx"], b["vy"], b["tx"], b["ty"], b["kind"], b["alive"], *args)
    _assert_same(a, b)
    ships = (a["kind"] == KIND_SHIP) & (a["alive"] == 1)
    speed = np.hypot(a["vx"][ships].astype(np.float64), a["vy"][ships].astype(np.float64))
    assert speed.max() <= 300 * (1 + 1e-6)
    planets = a["kind"] == KIND_PLANET
    assert np.array_equal(a["x"][planets], s["x"][planets])
