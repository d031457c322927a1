"""The movement kernels equal their numpy references bit for bit (tests/reference.py)."""

import numpy as np
import pytest

from sim.movement import drift, move_thrust, move_velocity
from tests.reference import drift_ref, move_thrust_ref, move_velocity_ref

F = np.float32
N, LO = 5000, 4000  # NPCs in [0, LO), players in [LO, N)
BOUNDS = np.array([0, 0, 1000, 1000], dtype=F)


def _state(seed: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {
        "x": r.uniform(-5, 1005, N).astype(F),
        "y": r.uniform(-5, 1005, N).astype(F),
        "vx": r.uniform(-400, 400, N).astype(F),
        "vy": r.uniform(-400, 400, N).astype(F),
        "tx": r.uniform(-0.7, 0.7, N).astype(F),
        "ty": r.uniform(-0.7, 0.7, N).astype(F),
        "alive": (r.random(N) < 0.9).astype(np.uint8),
    }


def _copy(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in s.items()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drift_and_velocity_move_equal_reference(seed: int) -> None:
    s = _state(seed)
    a, b = _copy(s), _copy(s)
    for _ in range(20):
        drift(a["x"], a["y"], a["vx"], a["vy"], a["alive"], 0, LO, F(1 / 60), F(1000), F(1000))
        drift_ref(b["x"], b["y"], b["vx"], b["vy"], b["alive"], 0, LO, F(1 / 60), F(1000), F(1000))
        move_velocity(a["x"], a["y"], a["vx"], a["vy"], a["alive"], LO, F(1 / 60), BOUNDS)
        move_velocity_ref(b["x"], b["y"], b["vx"], b["vy"], b["alive"], LO, F(1 / 60), BOUNDS)
    _assert_same(a, b)
    assert not np.array_equal(a["x"], s["x"])  # it moved
    live = a["alive"] == 1
    assert (a["x"][live] >= 0).all() and (a["x"][live] <= 1000).all()
    assert np.array_equal(a["x"][~live], s["x"][~live])  # dead untouched
    assert np.array_equal(a["vx"][LO:], s["vx"][LO:])  # players keep their velocity (clamped, not reflected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_thrust_move_equals_reference(seed: int) -> None:
    s = _state(seed)
    a, b = _copy(s), _copy(s)
    args = (LO, F(1 / 60), BOUNDS, F(200), F(300))
    for _ in range(20):
        move_thrust(a["x"], a["y"], a["vx"], a["vy"], a["tx"], a["ty"], a["alive"], *args)
        move_thrust_ref(b["x"], b["y"], b["vx"], b["vy"], b["tx"], b["ty"], b["alive"], *args)
    _assert_same(a, b)
    ships = a["alive"][LO:] == 1
    speed = np.hypot(a["vx"][LO:][ships].astype(np.float64), a["vy"][LO:][ships].astype(np.float64))
    assert speed.max() <= 300 * (1 + 1e-6)
    assert np.array_equal(a["x"][:LO], s["x"][:LO])  # only the player range moves
