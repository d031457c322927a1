"""Scalable replication: quantized delta snapshots against each client's acknowledged baseline,
with interest management (AOI) and a per-client byte budget driven by priority accumulators.

Server side, per send (see docs/replication.md for the model and the bytes)::

    rep = Replicator(schema_of(game.replicated_fields()), game.capacity, max_clients, radius=game.view_radius)
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

Modules: ``schema`` (fields and quantization), ``frames`` (the ``d`` frame),
``replicator`` (server), ``decoder`` (client), ``kernels`` (per-client
encode, decode) and ``group_kernels`` (batched AOI and group encode). ``warm`` compiles them all.
"""
