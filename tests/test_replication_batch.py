"""Replicator.frames_for (one numba call per group) against frame_for client by client.

Two replicators fed the same sends: one encodes each group with frames_for, the other with
frame_for per client in the same order. Frames must be byte-identical, and so must every piece
of per-client state (known sets by ring index, validity seqs, priority accumulators).
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from netcode.replication.decoder import ReplicationDecoder
from netcode.replication.frames import decode_delta_frame, encode_delta_frame
from netcode.replication.kernels import RING
from netcode.replication.replicator import Replicator
from tests.test_replication import World
from tests.worlds import wander_schema

W = 100.0


def _same_state(a: Replicator, b: Replicator, nclients: int) -> None:
    np.testing.assert_array_equal(a._cl_seq, b._cl_seq)
    np.testing.assert_array_equal(a.prio, b.prio)
    np.testing.assert_array_equal(a.prio_dirty, b.prio_dirty)
    for c in range(nclients):
        for ri in range(RING):
            seq = int(a._cl_seq[c, ri])
            if seq < 0 or int(a.ring_seq[ri]) != seq:
                continue
            ka, kb = a.known(c, int(a.ring_tick[ri])), b.known(c, int(b.ring_tick[ri]))
            assert ka is not None and kb is not None
            (ia, sa), (ib, sb) = ka, kb
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(sa, sb)
            assert ia.dtype == ib.dtype and sa.dtype == sb.dtype
    for c in range(nclients):  # a clean priority row is all zeros
        if not a.prio_dirty[c]:
            assert not a.prio[c].any()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("aoi", [None, 30.0])
def test_frames_for_matches_frame_for(seed: int, aoi: float | None) -> None:
    rng = np.random.default_rng(1000 * seed + (0 if aoi is None else 1))
    cap = int(rng.integers(8, 160))
    nclients = int(rng.integers(1, 24))
    world = World(rng, cap, float(rng.uniform(0.2, 0.9)))
    schema = wander_schema(W, W)
    a = Replicator(schema, cap, nclients, radius=aoi)
    b = Replicator(schema, cap, nclients, radius=aoi)
    decs = [ReplicationDecoder(schema) for _ in range(nclients)]
    groups = int(rng.integers(1, 4))
    sent: list[int] = []
    for tick in range(1, 70):
        world.step(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.0, 0.1)))
        recs = world.records()
        a.begin_send(tick, recs)
        b.begin_send(tick, recs)
        group = [c for c in range(nclients) if c % groups == tick % groups]
        rng.shuffle(group)
        if not group:
            continue
        own = rng.integers(-1, cap, len(group))
        a.set_viewers(group, own)
        b.set_viewers(group, own)
        # acks: the decoder's newest (usually), an older or unknown tick, or none
        acks: list[int | None] = []
        for c in group:
            r = rng.random()
            if r < 0.7:
                acks.append(decs[c].ack)
            elif r < 0.8 and sent:
                acks.append(int(rng.choice(sent)))
            elif r < 0.9:
                acks.append(None)
            else:
                acks.append(int(rng.integers(0, tick + 3)))
        ack_seqs = [int(v) for v in rng.choice([0, 5, 127, 128, 255, 256, 65535, 65536, 2**32, 2**40], len(group))]
        r = rng.random()
        budget = None if r < 0.25 else a.min_budget() if r < 0.4 else int(rng.integers(a.min_budget(), 400))
        fa = a.frames_for(group, acks, ack_seqs, budget)
        fb = [b.frame_for(c, k, s, budget) for c, k, s in zip(group, acks, ack_seqs, strict=True)]
        assert fa == fb
        for c, f, s in zip(group, fa, ack_seqs, strict=True):
            fr = decode_delta_frame(f)
            assert fr.ack_seq == s and fr.tick == tick
            assert f == encode_delta_frame(fr.tick, fr.baseline, s, fr.body)
            assert f == msgpack.packb(
                {"t": "d", "k": fr.tick, "b": fr.baseline, "a": s, "e": fr.body}, use_bin_type=True
            )
            if rng.random() < 0.85:  # some frames are lost
                decs[c].receive(f)
        sent.append(tick)
        _same_state(a, b, nclients)
        if budget is not None and len(fa):
            for f in fa:
                assert len(decode_delta_frame(f).body) <= budget
        if rng.random() < 0.05:
            gone = int(rng.integers(0, nclients))
            a.forget(gone)
            b.forget(gone)
            decs[gone] = ReplicationDecoder(schema)


def test_frames_for_big_bodies_and_duplicates() -> None:
    """Bodies past 255 and 65535 bytes (bin8/16/32 headers) and a client listed twice."""
    rng = np.random.default_rng(7)
    cap = 9000
    biggest = 0
    world = World(rng, cap, 0.9)
    schema = wander_schema(W, W)
    a = Replicator(schema, cap, 3, radius=1000.0)
    b = Replicator(schema, cap, 3, radius=1000.0)
    for tick, budget in ((1, None), (2, 200), (3, 70000), (4, None)):
        world.step(0.9, 0.01)
        recs = world.records()
        for r in (a, b):
            r.begin_send(tick, recs)
            r.set_viewers([0, 1, 2], [0, 1, 2], np.full(3, W / 2), np.full(3, W / 2))
        acks = [tick - 1, None, tick - 1]
        fa = a.frames_for([0, 1, 2], acks, [1, 2, 3], budget)
        fb = [b.frame_for(c, k, s, budget) for c, k, s in zip([0, 1, 2], acks, [1, 2, 3], strict=True)]
        assert fa == fb
        _same_state(a, b, 3)
        biggest = max(biggest, *(len(f) for f in fa))
    assert biggest > 65536
    # acks no snapshot can have (a client may claim any uint64): no baseline, as with frame_for
    for r in (a, b):
        r.begin_send(5, world.records())
        r.set_viewers([0, 1, 2], [0, 1, 2], np.full(3, W / 2), np.full(3, W / 2))
    fa = a.frames_for([0, 1, 2], [2**64 - 1, 2**63, -1], [0, 0, 0], 300)
    fb = [b.frame_for(c, k, 0, 300) for c, k in zip([0, 1, 2], [2**64 - 1, 2**63, -1], strict=True)]
    assert fa == fb
    assert all(decode_delta_frame(f).baseline == 0 for f in fa)
    _same_state(a, b, 3)
    fa = a.frames_for([0, 0, 1], [4, 4, 4], [0, 0, 0], 300)
    fb = [b.frame_for(c, 4, 0, 300) for c in (0, 0, 1)]
    assert fa == fb
    _same_state(a, b, 3)


def test_frames_for_errors() -> None:
    schema = wander_schema(W, W)
    rep = Replicator(schema, 8, 2, radius=10.0)
    with pytest.raises(RuntimeError):
        rep.frames_for([0], [0], [0])
    recs = World(np.random.default_rng(1), 8, 0.5).records()
    rep.begin_send(1, recs)
    with pytest.raises(ValueError):
        rep.frames_for([0], [0], [0], rep.min_budget() - 1)
    with pytest.raises(KeyError):
        rep.frames_for([0], [0], [0], rep.min_budget())
    assert rep.frames_for([], [], [], None) == []
