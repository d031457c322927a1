"""sim.aoi: the grid query equals brute force, includes the viewer's own slot, is sorted."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.aoi import AoiGrid


def brute(x: np.ndarray, y: np.ndarray, alive: np.ndarray, vx: float, vy: float, r: float, own: int) -> np.ndarray:
    d2 = (x - vx) ** 2 + (y - vy) ** 2
    sel = (alive != 0) & (d2 <= r * r) if r >= 0 else np.zeros_like(alive, dtype=bool)
    if own >= 0 and alive[own]:
        sel[own] = True
    return np.flatnonzero(sel)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    nv=st.integers(1, 20),
    cell=st.floats(1.0, 80.0),
    rmax=st.floats(0.0, 120.0),
)
def test_query_matches_brute_force(seed: int, n: int, nv: int, cell: float, rmax: float) -> None:
    rng = np.random.default_rng(seed)
    # some entities outside the bounds (clamped into edge cells) must still be found
    x = rng.uniform(-20, 120, n)
    y = rng.uniform(-20, 120, n)
    alive = (rng.random(n) < 0.8).astype(np.uint8)
    g = AoiGrid(n, (0.0, 0.0, 100.0, 100.0), cell)
    assert g.build(x, y, alive) == int(alive.sum())
    vx = rng.uniform(-30, 130, nv)
    vy = rng.uniform(-30, 130, nv)
    vr = rng.uniform(0, rmax, nv)
    own = rng.integers(-1, n, nv)
    offsets, slots = g.query(vx, vy, vr, own)
    assert offsets.shape == (nv + 1,)
    for v in range(nv):
        got = slots[offsets[v] : offsets[v + 1]]
        want = brute(x, y, alive, vx[v], vy[v], vr[v], int(own[v]))
        np.testing.assert_array_equal(got, want)
        assert np.all(np.diff(got) > 0)


def test_own_slot_always_included_and_output_grows() -> None:
    n = 2000
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    alive = np.ones(n, dtype=np.uint8)
    g = AoiGrid(n, (0.0, 0.0, 1000.0, 1000.0), 100.0)
    g.build(x, y, alive)
    nv = 1000
    own = rng.choice(n, nv, replace=False)
    # viewers far from their own entity: it is included anyway
    offsets, slots = g.query(np.full(nv, 5000.0), np.full(nv, 5000.0), np.full(nv, 10.0), own)
    for v in range(nv):
        assert list(slots[offsets[v] : offsets[v + 1]]) == [own[v]]
    # 1000 viewers x ~63 visible each overflow the initial buffer: it grows
    offsets, slots = g.query(x[own], y[own], np.full(nv, 100.0), own)
    assert slots.shape[0] == offsets[-1] > 2000
    for v in range(0, nv, 97):
        np.testing.assert_array_equal(
            slots[offsets[v] : offsets[v + 1]], brute(x, y, alive, x[own[v]], y[own[v]], 100.0, int(own[v]))
        )


def test_dead_own_slot_and_nan_viewer() -> None:
    x = np.array([1.0, 2.0, 3.0])
    alive = np.array([1, 0, 1], dtype=np.uint8)
    g = AoiGrid(3, (0.0, 0.0, 10.0, 10.0), 5.0)
    g.build(x, x, alive)
    offsets, slots = g.query(np.array([np.nan, 2.0]), np.array([np.nan, 2.0]), np.array([5.0, 5.0]), np.array([1, 1]))
    assert list(slots[offsets[0] : offsets[1]]) == []
    assert list(slots[offsets[1] : offsets[2]]) == [0, 2]
