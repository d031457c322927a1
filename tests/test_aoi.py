"""sim.aoi: the grid query equals brute force, includes the viewer's own entity and the always-relevant
ones, is sorted, and grows its output. Ids are (generation 1) << 20 | slot; 0 = no live entity."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.aoi import AoiGrid

GEN = np.uint32(1 << 20)


def ids_of(alive: np.ndarray) -> np.ndarray:
    return np.where(alive != 0, GEN | np.arange(len(alive), dtype=np.uint32), 0).astype(np.uint32)


def brute(x: np.ndarray, y: np.ndarray, ids: np.ndarray, vx: float, vy: float, r: float, own: int,
          always: np.ndarray) -> np.ndarray:  # fmt: skip
    d2 = (x - vx) ** 2 + (y - vy) ** 2
    sel = (ids != 0) & (d2 <= r * r) if r >= 0 and vx == vx and vy == vy else np.zeros(len(ids), dtype=bool)
    out = set(ids[sel].tolist()) | set(always.tolist())
    if own:
        out.add(own)
    return np.array(sorted(out), dtype=np.uint32)


def grid(x: np.ndarray, y: np.ndarray, alive: np.ndarray, bounds: float, cell: float) -> tuple[AoiGrid, np.ndarray]:
    g = AoiGrid(len(x), (0.0, 0.0, bounds, bounds), cell)
    assert g.build(x, y, alive) == int(alive.sum())
    ids = ids_of(alive)
    g.order(ids)
    return g, ids


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
    g, ids = grid(x, y, alive, 100.0, cell)
    vx = rng.uniform(-30, 130, nv)
    vy = rng.uniform(-30, 130, nv)
    vr = rng.uniform(0, rmax, nv)
    own = ids[rng.integers(0, n, nv)]  # 0 where that slot is dead: no own entity
    always = np.unique(ids[rng.integers(0, n, 3)])
    always = always[always != 0]
    offsets, got_all = g.query(vx, vy, vr, own, always)
    assert offsets.shape == (nv + 1,)
    for v in range(nv):
        got = got_all[offsets[v] : offsets[v + 1]]
        np.testing.assert_array_equal(got, brute(x, y, ids, vx[v], vy[v], vr[v], int(own[v]), always))
        assert np.all(np.diff(got.astype(np.int64)) > 0)


def test_own_entity_always_included_and_output_grows() -> None:
    n = 2000
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    alive = np.ones(n, dtype=np.uint8)
    g, ids = grid(x, y, alive, 1000.0, 100.0)
    nv = 1000
    own = rng.choice(n, nv, replace=False)
    # viewers far from their own entity: it is included anyway
    offsets, got = g.query(np.full(nv, 5000.0), np.full(nv, 5000.0), 10.0, ids[own])
    for v in range(nv):
        assert got[offsets[v] : offsets[v + 1]].tolist() == [ids[own[v]]]
    # 1000 viewers x ~63 visible each overflow the initial buffer: it grows
    offsets, got = g.query(x[own], y[own], 100.0, ids[own])
    assert got.shape[0] == offsets[-1] > 4096
    none = np.zeros(0, dtype=np.uint32)
    for v in range(0, nv, 97):
        want = brute(x, y, ids, x[own[v]], y[own[v]], 100.0, int(ids[own[v]]), none)
        np.testing.assert_array_equal(got[offsets[v] : offsets[v + 1]], want)


def test_dead_entities_and_nan_viewer() -> None:
    x = np.array([1.0, 2.0, 3.0])
    alive = np.array([1, 0, 1], dtype=np.uint8)
    g, ids = grid(x, x, alive, 10.0, 5.0)
    offsets, got = g.query(np.array([np.nan, 2.0]), np.array([np.nan, 2.0]), 5.0, np.zeros(2, dtype=np.uint32))
    assert got[offsets[0] : offsets[1]].tolist() == []
    assert got[offsets[1] : offsets[2]].tolist() == [ids[0], ids[2]]
