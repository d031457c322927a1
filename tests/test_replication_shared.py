"""AOI off and no budget: clients that acknowledged the same snapshot share one encoded body."""

from __future__ import annotations

import numpy as np

from netcode.replication.decoder import ReplicationDecoder
from netcode.replication.replicator import Replicator
from tests.worlds import wander_schema

DT = np.dtype([("id", "<u4"), ("x", "<f4"), ("y", "<f4"), ("vx", "<f4"), ("vy", "<f4"), ("hp", "u1")])


def test_same_ack_same_bytes_and_every_client_reconstructs_the_world() -> None:
    rng = np.random.default_rng(1)
    n, clients = 300, 6
    recs = np.zeros(n, dtype=DT)
    recs["id"] = (1 << 20) | np.arange(n, dtype=np.uint32)
    recs["x"], recs["y"] = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    schema = wander_schema()
    rep = Replicator(schema, n, clients, radius=None)
    decs = [ReplicationDecoder(schema) for _ in range(clients)]
    acks = [0] * clients
    for tick in range(1, 40):
        recs["x"] = np.clip(recs["x"] + rng.normal(0, 1, n), 0, 1000)
        rep.begin_send(tick, recs)
        rep.set_viewers(np.arange(clients), np.zeros(clients, dtype=np.int64))
        bodies: dict[int, set[bytes]] = {}
        for c in range(clients):
            p = rep.encode_for(c, acks[c])
            bodies.setdefault(p.baseline, set()).add(p.body)
            if c % 3 != 0 or tick % 4 == 0:  # clients 0 and 3 lose 3 snapshots out of 4
                assert decs[c].apply(p.tick, p.baseline, p.body)
                acks[c] = decs[c].ack
        # One body per baseline, whoever it goes to.
        assert all(len(v) == 1 for v in bodies.values())
        want = schema.quantize(recs)
        for c in range(clients):
            if decs[c].tick == tick:
                order = np.argsort(decs[c].ids)
                assert np.array_equal(decs[c].ids[order], recs["id"])
                assert np.array_equal(decs[c].q[order], want)
    assert rep.shared_hits > 0
