"""Scalable replication: quantized delta snapshots against each client's acknowledged baseline,
with interest management (AOI) and a per-client byte budget driven by priority accumulators.

Server side, per send (see docs/replication.md for the model and the bytes)::

    rep = Replicator(schema_for("wander"), game.capacity, max_clients, radius=100.0)
    rep.begin_send(tick, records)                     # quantize into the shared ring, build the grid
    rep.set_viewers(client_slots, own_entity_slots)   # batched AOI (skip when radius is None)
    for c in clients:
        p = rep.encode_for(c, ack_tick, budget=1200)  # numba: visibility diff, delta, budget
        frame = encode_delta_frame(p.tick, p.baseline, ack_seq, p.body)
    frames = rep.frames_for(clients, acks, ack_seqs, budget=1200)  # the same, a group in one call
    buf, offsets = rep.encode_group(clients, acks, ack_seqs, 1200, ws=True)  # one buffer, socket-ready
    rep.forget(c)                                      # when a client leaves

Client side: ``ReplicationDecoder(schema).receive(frame)`` then ``.records()`` / ``.values(name)``;
acknowledge ``decoder.ack`` (the newest snapshot id decoded) in the input frames.

Correctness model. The server keeps one shared ring of the last RING sends' quantized state by
slot (plus the entity id at each slot). Per client and per send it stores only the client's
*known set* after that snapshot: sorted entity ids and, per id, the send seq whose shared-ring
values the client holds (``src``). A delta is encoded against the known set of the snapshot the
client acknowledged, so entities deferred by the budget keep their older ``src`` and are later
encoded against exactly what the client has. When ``src`` has left the ring, the update is sent
with absolute values (the ABS mask bit). A client with no usable baseline gets a zero baseline
(``baseline == 0``): every visible entity enters.

No I/O, no clock: arrays in, bytes out.

Modules: ``replication_schema`` (fields and quantization), ``replication_frames`` (the ``d`` frame),
``replicator`` (server), ``replication_decoder`` (client), ``replication_kernels`` (per-client
encode, decode) and ``replication_group_kernels`` (batched AOI and group encode). This module
re-exports their public names.
"""

from __future__ import annotations

import numpy as np

from netcode.replication_decoder import ReplicationDecoder
from netcode.replication_frames import DELTA_TYPE, DeltaFrame, decode_delta_frame, encode_delta_frame
from netcode.replication_kernels import RING
from netcode.replication_schema import (
    DEFAULT_RADIUS,
    Quant,
    ReplicationSchema,
    schema_for,
    schema_from_wire,
    schema_to_wire,
    startales_schema,
    wander_schema,
)
from netcode.replicator import DeltaPayload, GroupFrames, Replicator
from sim.aoi import warmup as aoi_warmup

__all__ = [
    "DEFAULT_RADIUS",
    "DELTA_TYPE",
    "RING",
    "DeltaFrame",
    "DeltaPayload",
    "GroupFrames",
    "Quant",
    "ReplicationDecoder",
    "ReplicationSchema",
    "Replicator",
    "decode_delta_frame",
    "encode_delta_frame",
    "schema_for",
    "schema_from_wire",
    "schema_to_wire",
    "startales_schema",
    "wander_schema",
    "warmup",
]


def warmup() -> None:
    """Compile (or load) every replication and AOI kernel."""
    aoi_warmup()
    schema = wander_schema()
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
