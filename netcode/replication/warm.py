"""Compile (or load) every replication and AOI kernel at boot."""

from __future__ import annotations

import numpy as np

from netcode.replication.decoder import ReplicationDecoder
from netcode.replication.replicator import Replicator
from netcode.replication.schema import schema_of
from sim.aoi import warmup as aoi_warmup


def warmup() -> None:
    """Compile (or load) every replication and AOI kernel."""
    aoi_warmup()
    schema = schema_of([("x", "fixed", 0.0, 1000.0, 1 / 64), ("y", "fixed", 0.0, 1000.0, 1 / 64),
                        ("vx", "fixed", -8.0, 8.0, 1 / 256), ("vy", "fixed", -8.0, 8.0, 1 / 256),
                        ("hp", "int", 0, 255, 1)])  # fmt: skip
    dt = np.dtype([("id", "<u4"), ("x", "<f4"), ("y", "<f4"), ("vx", "<f4"), ("vy", "<f4"), ("hp", "u1")])
    recs = np.zeros(4, dtype=dt)
    recs["id"] = (1 << 20) | np.arange(4, dtype=np.uint32)
    recs["x"] = recs["y"] = np.arange(4, dtype=np.float32)
    dec = ReplicationDecoder(schema)
    for aoi in (None, 50.0):
        rep = Replicator(schema, 8, 1, radius=aoi)
        for t in (1, 2):
            recs["x"] += 1.0
            rep.begin_send(t, recs)
            rep.set_viewers([0], [0])
            dec.receive(rep.frame_for(0, dec.ack, 0, budget=rep.min_budget() if t == 2 else None))
        rep.frames_for([0], [2], [0], rep.min_budget())
        rep.encode_group(np.array([0]), np.array([2]), np.array([0]), rep.min_budget(), ws=True)
    dec.records()
