"""Server side of delta replication: the shared snapshot ring, per-client known sets, the encoders.

See docs/replication.md for the model and netcode/replication.py for the overview. Per send:
``begin_send`` (quantize the world into the shared ring, build the AOI grid), ``set_viewers``
(batched AOI), then ``encode_group`` / ``frames_for`` (a group of clients in one numba call) or
``encode_for`` / ``frame_for`` (one client).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from netcode.replication.frames import encode_delta_frame
from netcode.replication.group_kernels import encode_group
from netcode.replication.kernels import (
    N_STATS,
    RING,
    ST_DEFERRED,
    ST_ENTER,
    ST_KNOWN,
    ST_LEAVE,
    ST_UPDATE,
    ST_UPDATE_BYTES,
    encode_client,
    scatter_rows,
)
from netcode.replication.schema import ReplicationSchema
from netcode.ws_frames import OP_BINARY, frame_header
from sim.aoi import AoiGrid
from sim.entities import SLOT_MASK


class DeltaPayload(NamedTuple):
    tick: int
    baseline: int  # 0 = zero baseline (every visible entity enters)
    body: bytes
    leaves: int
    updates: int
    enters: int
    deferred: int  # items (leave/update/enter) held back by the budget
    update_bytes: int  # bytes of the update section (bits per entity update = 8 * this / updates)
    known: int  # entities the client holds after applying this snapshot


class GroupFrames(NamedTuple):
    """Every frame of one group in one buffer: frame b is ``buf[offsets[b]:offsets[b + 1]]``."""

    buf: bytes
    offsets: list[int]


def _acks64(values: Sequence[int | None] | np.ndarray, n: int) -> np.ndarray:
    """Snapshot acks as int64; None, and values no snapshot id can have (a client may claim any
    uint64), become 0 (no baseline), which is what looking them up would give."""
    try:
        return np.asarray(values, dtype=np.int64).reshape(n)
    except (TypeError, ValueError, OverflowError):
        return np.fromiter((v if v is not None and 0 < v < 2**63 else 0 for v in values), np.int64, n)


class Replicator:
    """Shared snapshot ring + per-client known sets + per-client priority accumulators.

    capacity: entity slots of the world; max_clients: client slots (0..max_clients-1, the engine
    assigns them); radius: AOI view radius (None = AOI off: every client sees the whole world).
    """

    def __init__(
        self,
        schema: ReplicationSchema,
        capacity: int,
        max_clients: int,
        *,
        radius: float | None = None,
        bounds: tuple[float, float, float, float] | None = None,
    ) -> None:
        self.schema = schema
        self.capacity = capacity
        self.max_clients = max_clients
        self.radius = radius
        F = schema.nfields
        self.q_ring = np.zeros((RING, capacity, F), dtype=np.int32)
        self.id_ring = np.zeros((RING, capacity), dtype=np.uint32)
        self.ring_seq = np.full(RING, -1, dtype=np.int64)
        self.ring_tick = np.full(RING, -1, dtype=np.int64)
        self._tick_seq: dict[int, int] = {}
        self.seq = 0  # sends so far; the current send is self.seq (1-based)
        self.tick = -1
        self.px = np.zeros(capacity, dtype=np.float64)
        self.py = np.zeros(capacity, dtype=np.float64)
        self._all_ids = np.zeros(0, dtype=np.uint32)
        self.always = np.zeros(0, dtype=np.uint32)
        # encode-once cache of the current send (AOI off, no budget): baseline -> (seq, payload, off, len)
        self._shared: dict[int, tuple[int, DeltaPayload, int, int]] = {}
        self.shared_hits = 0
        self.grid: AoiGrid | None = None
        if radius is not None:
            b = bounds or schema.bounds()
            self.grid = AoiGrid(capacity, b, radius if radius > 0 else b[2] - b[0])
        # per client and ring entry: the send seq its known set was stored for (-1: none) and where
        # it is in that ring entry's arena row (replication_group_kernels.py)
        self._cl_seq = np.full((max_clients, RING), -1, dtype=np.int64)
        self._cl_off = np.zeros((max_clients, RING), dtype=np.int64)
        self._cl_len = np.zeros((max_clients, RING), dtype=np.int64)
        self._arena_ids = np.zeros((RING, 1024), dtype=np.uint32)
        self._arena_src = np.zeros((RING, 1024), dtype=np.int64)
        self._arena_fill = np.zeros(RING, dtype=np.int64)
        self.prio = np.zeros((max_clients, capacity), dtype=np.float32)
        self.prio_dirty = np.zeros(max_clients, dtype=np.uint8)  # 0: the client's prio row is all 0
        # visibility of the current send
        self._row_of = np.full(max_clients, -1, dtype=np.int64)
        self._vis_off = np.zeros(1, dtype=np.int64)
        self._vis_ids = np.zeros(0, dtype=np.uint32)
        self._view = np.zeros((max_clients, 3), dtype=np.float64)  # x, y, radius
        self._view_seq = np.zeros(max_clients, dtype=np.int64)
        # scratch
        self._out = np.zeros(1024, dtype=np.uint8)
        self._frames = np.zeros(1024, dtype=np.uint8)
        self._needs = np.zeros(4, dtype=np.int64)
        self.batch_stats = np.zeros((0, N_STATS), dtype=np.int64)  # per client of the last group encode
        self._scratch_n = 0
        self._alloc_scratch(256)
        self._stats = np.zeros(N_STATS, dtype=np.int64)
        self._empty_ids = np.zeros(0, dtype=np.uint32)
        self._empty_src = np.zeros(0, dtype=np.int64)

    def _alloc_scratch(self, n: int) -> None:
        self._scratch_n = n
        self._new_ids = np.zeros(n, dtype=np.uint32)
        self._new_src = np.zeros(n, dtype=np.int64)
        self._c_kind = np.zeros(n, dtype=np.int64)
        self._c_ref = np.zeros(n, dtype=np.int64)
        self._c_cost = np.zeros(n, dtype=np.int64)
        self._c_prio = np.zeros(n, dtype=np.float64)
        self._c_sel = np.zeros(n, dtype=np.uint8)

    def _arena_room(self, ri: int, n: int) -> None:
        """Make room for n more known-set entries in ring entry ri's arena row."""
        need = int(self._arena_fill[ri]) + n
        cols = self._arena_ids.shape[1]
        if need > cols:
            cols = max(need, 2 * cols)
            ids = np.zeros((RING, cols), dtype=np.uint32)
            src = np.zeros((RING, cols), dtype=np.int64)
            ids[:, : self._arena_ids.shape[1]] = self._arena_ids
            src[:, : self._arena_src.shape[1]] = self._arena_src
            self._arena_ids, self._arena_src = ids, src

    # -- per send ---------------------------------------------------------------------------------
    def begin_send(self, tick: int, records: np.ndarray) -> None:
        """Start a send: quantize the live entities (records with 'id' and the schema's fields,
        e.g. ``game.replicate`` output) into the shared ring under snapshot id ``tick`` (> 0 and
        increasing)."""
        if tick <= self.tick or tick <= 0:
            raise ValueError(f"snapshot ids must be positive and increase: {tick} after {self.tick}")
        self.seq += 1
        self.tick = tick
        ri = self.seq % RING
        old = int(self.ring_tick[ri])
        if old >= 0:
            self._tick_seq.pop(old, None)
        self.ring_seq[ri] = self.seq
        self.ring_tick[ri] = tick
        self._tick_seq[tick] = self.seq
        self._arena_fill[ri] = 0  # the known sets stored for the send this entry held are dead
        ids = np.ascontiguousarray(records["id"], dtype=np.uint32)
        slots = (ids & SLOT_MASK).astype(np.int64)
        q = self.schema.quantize(records)
        scatter_rows(slots, ids, q, self.id_ring[ri], self.q_ring[ri])
        xname, yname = self.schema.pos
        self.px[slots] = records[xname]
        self.py[slots] = records[yname]
        g = self.grid
        if g is not None:
            g.build(self.px, self.py, self.id_ring[ri] != 0)
            g.order(self.id_ring[ri])
        else:
            self._all_ids = np.sort(ids[ids != 0])
        self._row_of.fill(-1)
        self._shared.clear()

    def set_viewers(
        self,
        clients: Sequence[int] | np.ndarray,
        own_slots: Sequence[int] | np.ndarray,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        radius: float | np.ndarray | None = None,
    ) -> None:
        """Batched AOI for this send. Viewer positions default to the own slots' positions (a
        client without a live entity, own slot -1, then sees nothing). A later call replaces the
        visibility of an earlier one (its clients must be listed again)."""
        clients_a = np.asarray(clients, dtype=np.int64)
        own = np.ascontiguousarray(own_slots, dtype=np.int64)
        ri = self.seq % RING
        id_now = self.id_ring[ri]
        alive = own >= 0
        safe = np.where(alive, own, 0)
        alive &= id_now[safe] != 0
        vx = np.where(alive, self.px[safe], np.nan) if x is None else np.asarray(x, dtype=np.float64)
        vy = np.where(alive, self.py[safe], np.nan) if y is None else np.asarray(y, dtype=np.float64)
        r = self.radius if radius is None else radius
        vr = np.broadcast_to(np.asarray(np.inf if r is None else r, dtype=np.float64), vx.shape)
        self._view[clients_a, 0] = vx
        self._view[clients_a, 1] = vy
        self._view[clients_a, 2] = vr
        self._view_seq[clients_a] = self.seq
        g = self.grid
        if g is None:
            return
        always = self.always
        if always.size:
            # Always-relevant entities (e.g. startales' planets) join every viewer's set.
            always = np.unique(always[id_now[(always & SLOT_MASK).astype(np.int64)] == always])
        own_id = np.where(alive, id_now[safe], 0).astype(np.uint32)
        self._vis_off, self._vis_ids = g.query(vx, vy, vr, own_id, always)
        self._row_of.fill(-1)
        self._row_of[clients_a] = np.arange(clients_a.shape[0])

    def visible_ids(self, client: int) -> np.ndarray:
        """Sorted ids the client sees in the current send (whole world when AOI is off)."""
        if self.grid is None:
            return self._all_ids
        row = int(self._row_of[client])
        if row < 0:
            raise KeyError(f"client {client} has no viewer in send {self.seq} (call set_viewers)")
        return self._vis_ids[self._vis_off[row] : self._vis_off[row + 1]]

    def _baseline(self, client: int, ack: int | None) -> tuple[int, np.ndarray, np.ndarray]:
        if ack:
            seq = self._tick_seq.get(ack)
            if seq is not None:
                ri = seq % RING
                if self._cl_seq[client, ri] == seq:
                    o, n = int(self._cl_off[client, ri]), int(self._cl_len[client, ri])
                    return ack, self._arena_ids[ri, o : o + n], self._arena_src[ri, o : o + n]
        return 0, self._empty_ids, self._empty_src

    def _store_known(self, client: int, off: int, n: int) -> None:
        ri = self.seq % RING
        self._cl_seq[client, ri] = self.seq
        self._cl_off[client, ri] = off
        self._cl_len[client, ri] = n

    def encode_for(self, client: int, ack: int | None, budget: int | None = None) -> DeltaPayload:
        """Encode this send for a client whose newest received snapshot id is ``ack`` (None/0 =
        none). ``budget``: max body bytes (None = unlimited; at least ``min_budget()``)."""
        if self.seq == 0:
            raise RuntimeError("encode_for before begin_send")
        if budget is not None and budget < self.min_budget():
            raise ValueError(f"budget {budget} below the minimum {self.min_budget()}")
        baseline, base_ids, base_src = self._baseline(client, ack)
        # With AOI off and no budget every client's view is the whole world and nothing is deferred,
        # so clients that acknowledged the same snapshot get byte-identical bodies: encode once.
        shared = self.grid is None and budget is None
        if shared:
            hit = self._shared.get(baseline)
            if hit is not None and hit[0] == self.seq:
                _, payload, off, n = hit
                self._store_known(client, off, n)
                self.prio[client] = 0.0
                self.prio_dirty[client] = 0
                self.shared_hits += 1
                return payload
        vis = self.visible_ids(client)
        need = base_ids.shape[0] + vis.shape[0]
        if need > self._scratch_n:
            self._alloc_scratch(max(need, 2 * self._scratch_n))
        F = self.schema.nfields
        bound = 16 + need * (15 + 10 * F)
        if self._out.shape[0] < bound:
            self._out = np.zeros(max(bound, 2 * self._out.shape[0]), dtype=np.uint8)
        if self._view_seq[client] == self.seq:
            vx, vy, vr = self._view[client]
        else:
            vx = vy = 0.0
            vr = 0.0
        if not math.isfinite(vr) or not (math.isfinite(vx) and math.isfinite(vy)):
            vr = 0.0
        stats = self._stats
        n = encode_client(
            vis, base_ids, base_src, self.q_ring, self.ring_seq, np.int64(self.seq), self.px, self.py,
            float(vx), float(vy), float(vr), self.prio[client], self.prio_dirty[client : client + 1],
            np.int64(-1 if budget is None else budget), self._out, self._new_ids, self._new_src, self._c_kind,
            self._c_ref, self._c_cost, self._c_prio, self._c_sel, stats,
        )  # fmt: skip
        nk = int(stats[ST_KNOWN])
        ri = self.seq % RING
        self._arena_room(ri, nk)
        off = int(self._arena_fill[ri])
        self._arena_ids[ri, off : off + nk] = self._new_ids[:nk]
        self._arena_src[ri, off : off + nk] = self._new_src[:nk]
        self._arena_fill[ri] = off + nk
        self._store_known(client, off, nk)
        payload = DeltaPayload(
            self.tick, baseline, self._out[:n].tobytes(), int(stats[ST_LEAVE]), int(stats[ST_UPDATE]),
            int(stats[ST_ENTER]), int(stats[ST_DEFERRED]), int(stats[ST_UPDATE_BYTES]), nk,
        )  # fmt: skip
        if shared:
            self._shared[baseline] = (self.seq, payload, off, nk)
        return payload

    def frame_for(self, client: int, ack: int | None, ack_seq: int, budget: int | None = None) -> bytes:
        """``encode_for`` wrapped in the msgpack delta frame."""
        p = self.encode_for(client, ack, budget)
        return encode_delta_frame(p.tick, p.baseline, ack_seq, p.body)

    def frames_for(
        self,
        clients: Sequence[int] | np.ndarray,
        acks: Sequence[int | None] | np.ndarray,
        ack_seqs: Sequence[int] | np.ndarray,
        budget: int | None = None,
    ) -> list[bytes]:
        """``frame_for`` for a group of clients in one numba call: byte-identical frames and the
        same per-client state as calling ``frame_for(clients[i], acks[i], ack_seqs[i], budget)``
        in order."""
        buf, off = self.encode_group(clients, acks, ack_seqs, budget)
        return [buf[off[b] : off[b + 1]] for b in range(len(off) - 1)]

    def encode_group(
        self,
        clients: Sequence[int] | np.ndarray,
        acks: Sequence[int | None] | np.ndarray,
        ack_seqs: Sequence[int] | np.ndarray,
        budget: int | None = None,
        ws: bool = False,
    ) -> GroupFrames:
        """``frames_for`` as one buffer plus offsets; with ``ws`` each frame is preceded by its
        RFC 6455 header (a server's unmasked binary frame), ready for the socket. With AOI off and
        no budget (the encode-once case) or a client listed twice it runs ``frame_for`` in order."""
        if self.seq == 0:
            raise RuntimeError("encode_for before begin_send")
        if budget is not None and budget < self.min_budget():
            raise ValueError(f"budget {budget} below the minimum {self.min_budget()}")
        nb = len(clients)
        if len(acks) != nb or len(ack_seqs) != nb:
            raise ValueError("clients, acks and ack_seqs differ in length")
        if nb == 0:
            return GroupFrames(b"", [0])
        cl_a = np.asarray(clients, dtype=np.int64).reshape(nb)
        ack_seq_a = np.asarray(ack_seqs, dtype=np.int64).reshape(nb)
        if (ack_seq_a < 0).any():
            raise ValueError("negative ack_seq")
        if int(cl_a.min()) < 0 or int(cl_a.max()) >= self.max_clients:
            raise IndexError(f"client slots must be in [0, {self.max_clients})")
        if (self.grid is None and budget is None) or int(np.bincount(cl_a).max()) > 1:
            parts = [self.frame_for(int(c), a, int(s), budget) for c, a, s in zip(cl_a, acks, ack_seq_a, strict=True)]
            if ws:
                parts = [frame_header(OP_BINARY, len(p)) + p for p in parts]
            return GroupFrames(b"".join(parts), np.cumsum([0] + [len(p) for p in parts]).tolist())
        seq = self.seq
        if self.grid is None:
            vis_ids = self._all_ids
            vis_off = np.array([0, vis_ids.shape[0]], dtype=np.int64)
            rows = np.zeros(nb, dtype=np.int64)
        else:
            vis_ids, vis_off = self._vis_ids, self._vis_off
            rows = self._row_of[cl_a]
            if (rows < 0).any():
                bad = int(cl_a[int(np.argmax(rows < 0))])
                raise KeyError(f"client {bad} has no viewer in send {seq} (call set_viewers)")
        acks_a = _acks64(acks, nb)
        view = self._view[cl_a]
        view[self._view_seq[cl_a] != seq] = 0.0
        view[~np.isfinite(view).all(axis=1), 2] = 0.0
        frame_off = np.empty(nb + 1, dtype=np.int64)
        baselines = np.empty(nb, dtype=np.int64)
        base_ri = np.empty(nb, dtype=np.int64)
        stats = np.zeros((nb, N_STATS), dtype=np.int64)
        needs = self._needs
        ri = seq % RING
        while True:
            end = encode_group(
                vis_ids, vis_off, rows, cl_a, acks_a, ack_seq_a, self.ring_tick, self.ring_seq, np.int64(seq),
                np.int64(self.tick), self._cl_seq, self._cl_off, self._cl_len, self._arena_ids, self._arena_src,
                self._arena_fill, self.q_ring, self.px, self.py, view, self.prio, self.prio_dirty,
                np.int64(-1 if budget is None else budget), ws, self._frames, frame_off, baselines, base_ri,
                needs, self._out, self._c_kind, self._c_ref, self._c_cost, self._c_prio, self._c_sel, stats,
            )  # fmt: skip
            if end >= 0:
                break
            max_need, sum_need, fbound, max_body = (int(v) for v in needs)
            if max_need > self._scratch_n:
                self._alloc_scratch(max(max_need, 2 * self._scratch_n))
            if max_body > self._out.shape[0]:
                self._out = np.zeros(max(max_body, 2 * self._out.shape[0]), dtype=np.uint8)
            if fbound > self._frames.shape[0]:
                self._frames = np.zeros(max(fbound, 2 * self._frames.shape[0]), dtype=np.uint8)
            self._arena_room(ri, sum_need)
        self.batch_stats = stats
        return GroupFrames(self._frames[:end].tobytes(), frame_off.tolist())

    def min_budget(self) -> int:
        """The smallest legal budget: three counts plus the largest single item (an ABS update or
        an enter with 5-byte values) always fit, so the top-priority item is never blocked."""
        return 3 * 5 + 5 + 5 + 5 * self.schema.nfields

    def known(self, client: int, tick: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, src seq) the server recorded as known by the client after snapshot ``tick``."""
        seq = self._tick_seq.get(tick)
        if seq is None:
            return None
        ri = seq % RING
        if self._cl_seq[client, ri] != seq:
            return None
        o, n = int(self._cl_off[client, ri]), int(self._cl_len[client, ri])
        return self._arena_ids[ri, o : o + n].copy(), self._arena_src[ri, o : o + n].copy()

    def forget(self, client: int) -> None:
        """Drop everything about a client slot (it left; the slot may be reused)."""
        self._cl_seq[client] = -1
        self.prio[client] = 0.0
        self.prio_dirty[client] = 0
        self._row_of[client] = -1
        self._view_seq[client] = 0
