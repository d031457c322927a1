"""Batched AOI (`Replicator.set_viewers` → `visible_ids`) against brute force, and the group encoder's
socket-ready output (`encode_group(ws=True)`) against `frames_for` plus an RFC 6455 parser."""

from __future__ import annotations

import numpy as np
import pytest

from netcode.replication.replicator import Replicator
from netcode.ws_frames import OP_BINARY, FrameReader
from sim.entities import SLOT_MASK
from tests.test_replication import World
from tests.worlds import wander_schema

W = 100.0


def _brute(world: World, recs: np.ndarray, vx: float, vy: float, r: float, own: int, always: np.ndarray) -> np.ndarray:
    ids = recs["id"].astype(np.int64)
    slots = ids & SLOT_MASK
    x = world.x[slots].astype(np.float32).astype(np.float64)
    y = world.y[slots].astype(np.float32).astype(np.float64)
    seen = set()
    if r >= 0 and vx == vx and vy == vy:
        seen |= {int(i) for i in ids[(x - vx) ** 2 + (y - vy) ** 2 <= r * r]}
    seen |= {int(i) for i in ids[slots == own]}
    live = set(int(i) for i in ids)
    seen |= {int(a) for a in always if int(a) in live}
    return np.array(sorted(seen), dtype=np.uint32)


@pytest.mark.parametrize("seed", range(6))
def test_visible_ids_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cap = int(rng.integers(20, 400))
    world = World(rng, cap, float(rng.uniform(0.3, 0.9)))
    radius = float(rng.uniform(5.0, 60.0))
    rep = Replicator(wander_schema(W, W), cap, 16, radius=radius)
    for tick in range(1, 12):
        world.step(0.8, 0.05)
        recs = world.records()
        rep.begin_send(tick, recs)
        ids = recs["id"]
        # always-relevant ids: some live, some stale (another generation), some in view anyway
        always = np.concatenate([rng.choice(ids, min(5, len(ids)), replace=False), ids[:2] + (1 << 20)])
        rep.always = always.astype(np.uint32)
        nv = 16
        own = rng.integers(-1, cap, nv)
        x = rng.uniform(-10, W + 10, nv)
        y = rng.uniform(-10, W + 10, nv)
        x[0] = np.nan  # a viewer without a position sees only its own ship and the always set
        r = np.full(nv, radius)
        r[1] = -1.0
        explicit = tick % 2 == 0
        if explicit:
            rep.set_viewers(np.arange(nv), own, x, y, r)
        else:
            rep.set_viewers(np.arange(nv), own)
        for v in range(nv):
            o = int(own[v])
            alive = o >= 0 and bool(((ids & SLOT_MASK) == o).any())
            if explicit:
                vx, vy, vr = float(x[v]), float(y[v]), float(r[v])
            elif alive:
                i = int(np.flatnonzero((ids & SLOT_MASK) == o)[0])
                vx, vy, vr = float(recs["x"][i]), float(recs["y"][i]), radius
            else:
                vx = vy = float("nan")
                vr = radius
            want = _brute(world, recs, vx, vy, vr, o if alive else -1, rep.always)
            np.testing.assert_array_equal(rep.visible_ids(v), want)


def test_encode_group_ws_frames() -> None:
    """ws=True: each frame is the frames_for frame behind its RFC 6455 header (7-, 16- and 64-bit
    lengths), and both calls leave the same per-client state."""
    rng = np.random.default_rng(3)
    cap = 9000
    world = World(rng, cap, 0.9)
    schema = wander_schema(W, W)
    a = Replicator(schema, cap, 4, radius=1000.0)
    b = Replicator(schema, cap, 4, radius=1000.0)
    sizes: set[int] = set()
    for tick, budget in ((1, None), (2, 200), (3, 70000), (4, a.min_budget()), (5, 100)):
        world.step(0.9, 0.01)
        recs = world.records()
        for r in (a, b):
            r.begin_send(tick, recs)
            r.set_viewers([0, 1, 2, 3], [0, 1, 2, 3], np.full(4, W / 2), np.full(4, W / 2))
        acks = [tick - 1, None, 0, tick - 1]
        fa = a.frames_for([0, 1, 2, 3], acks, [1, 2, 3, 2**40], budget)
        buf, off = b.encode_group(np.arange(4), acks, [1, 2, 3, 2**40], budget, ws=True)
        assert len(off) == 5 and off[0] == 0 and off[-1] == len(buf)
        reader = FrameReader()
        got = reader.feed(buf)
        assert [op for op, _ in got] == [OP_BINARY] * 4
        assert [p for _, p in got] == fa
        for k in range(4):  # each slice is one whole frame
            assert FrameReader().feed(buf[off[k] : off[k + 1]]) == [(OP_BINARY, fa[k])]
        sizes |= {2 if len(f) < 126 else 4 if len(f) < 65536 else 10 for f in fa}  # header bytes
        np.testing.assert_array_equal(a._cl_seq, b._cl_seq)
        np.testing.assert_array_equal(a.prio, b.prio)
    assert sizes == {2, 4, 10}
