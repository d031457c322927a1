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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import msgpack
import numpy as np

from netcode.replication_kernels import (
    N_STATS,
    RING,
    ST_DEFERRED,
    ST_ENTER,
    ST_KNOWN,
    ST_LEAVE,
    ST_UPDATE,
    ST_UPDATE_BYTES,
    decode_body,
    encode_batch,
    encode_client,
    quantize_kernel,
    scatter_rows,
    slots_to_sorted_ids,
)
from sim.aoi import AoiGrid
from sim.aoi import warmup as aoi_warmup

__all__ = [
    "RING",
    "DeltaFrame",
    "DeltaPayload",
    "Quant",
    "ReplicationDecoder",
    "ReplicationSchema",
    "Replicator",
    "decode_delta_frame",
    "encode_delta_frame",
    "schema_for",
    "startales_schema",
    "wander_schema",
    "warmup",
]

SLOT_MASK: Final = 0xFFFFF
DELTA_TYPE: Final = "d"
DEFAULT_RADIUS: Final = {"wander": 100.0, "startales": 600.0}


# -- schema -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quant:
    """How one replicated field is quantized.

    ``fixed``: q = round((v - lo) / step) clipped to [0, round((hi - lo) / step)];
    dequantized v' = lo + q * step. ``int``: q = round(v) clipped to [lo, hi] (step ignored).
    """

    kind: Literal["fixed", "int"]
    lo: float
    hi: float
    step: float = 1.0

    def __post_init__(self) -> None:
        if not (self.hi > self.lo) or (self.kind == "fixed" and not self.step > 0):
            raise ValueError(f"bad quantization {self}")
        if self.kind not in ("fixed", "int"):
            raise ValueError(f"unknown quantization kind {self.kind!r}")
        if self.qmax > 2**31 - 1 or self.qmin < -(2**31):
            raise ValueError(f"{self} does not fit in int32")

    @property
    def offset(self) -> float:
        return self.lo if self.kind == "fixed" else 0.0

    @property
    def scale(self) -> float:
        return self.step if self.kind == "fixed" else 1.0

    @property
    def qmin(self) -> int:
        return 0 if self.kind == "fixed" else math.ceil(self.lo)

    @property
    def qmax(self) -> int:
        return round((self.hi - self.lo) / self.step) if self.kind == "fixed" else math.floor(self.hi)


@dataclass(frozen=True)
class ReplicationSchema:
    """The replicated fields of a game (besides the entity id) and their quantization.

    ``pos`` names the two fields used for AOI and proximity priority.
    """

    fields: tuple[tuple[str, Quant], ...]
    pos: tuple[str, str] = ("x", "y")
    names: tuple[str, ...] = field(init=False)
    offset: np.ndarray = field(init=False, repr=False, compare=False)
    scale: np.ndarray = field(init=False, repr=False, compare=False)
    inv_step: np.ndarray = field(init=False, repr=False, compare=False)
    qmin: np.ndarray = field(init=False, repr=False, compare=False)
    qmax: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.fields) <= 30:
            raise ValueError("a schema has 1..30 fields")
        names = tuple(n for n, _ in self.fields)
        if len(set(names)) != len(names) or "id" in names:
            raise ValueError(f"bad field names {names}")
        set_ = object.__setattr__
        set_(self, "names", names)
        qs = [q for _, q in self.fields]
        set_(self, "offset", np.array([q.offset for q in qs], dtype=np.float64))
        set_(self, "scale", np.array([q.scale for q in qs], dtype=np.float64))
        set_(self, "inv_step", 1.0 / self.scale)
        set_(self, "qmin", np.array([q.qmin for q in qs], dtype=np.int64))
        set_(self, "qmax", np.array([q.qmax for q in qs], dtype=np.int64))

    @property
    def nfields(self) -> int:
        return len(self.fields)

    def bounds(self) -> tuple[float, float, float, float]:
        """World bounds from the position fields' ranges (x0, y0, x1, y1)."""
        qx, qy = dict(self.fields)[self.pos[0]], dict(self.fields)[self.pos[1]]
        return qx.lo, qy.lo, qx.hi, qy.hi

    def quantize(self, records: np.ndarray) -> np.ndarray:
        """int32 (n, F) quantized values of a record array (any dtype holding the named fields)."""
        n = len(records)
        vals = np.empty((n, self.nfields), dtype=np.float64)
        for f, name in enumerate(self.names):
            vals[:, f] = records[name]
        out = np.empty((n, self.nfields), dtype=np.int32)
        quantize_kernel(vals, self.offset, self.inv_step, self.qmin, self.qmax, out)
        return out

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """float64 (n, F) values of quantized rows."""
        return self.offset + q.astype(np.float64) * self.scale

    @property
    def dtype(self) -> np.dtype:
        """A record dtype for decoded entities: id <u4, fixed fields <f4, int fields <i4."""
        return np.dtype([("id", "<u4")] + [(n, "<f4" if q.kind == "fixed" else "<i4") for n, q in self.fields])


def wander_schema(width: float = 1000.0, height: float = 1000.0) -> ReplicationSchema:
    """x, y at 1/64 unit over the world; vx, vy at 1/256 u/s over [-8, 8]; hp as-is."""
    return ReplicationSchema(
        (
            ("x", Quant("fixed", 0.0, width, 1 / 64)),
            ("y", Quant("fixed", 0.0, height, 1 / 64)),
            ("vx", Quant("fixed", -8.0, 8.0, 1 / 256)),
            ("vy", Quant("fixed", -8.0, 8.0, 1 / 256)),
            ("hp", Quant("int", 0, 255)),
        )
    )


def startales_schema(width: float = 4000.0, height: float = 4000.0) -> ReplicationSchema:
    """x, y at 1/16 unit over the world; vx, vy at 1/64 u/s over [-320, 320]; kind as-is."""
    return ReplicationSchema(
        (
            ("kind", Quant("int", 0, 255)),
            ("x", Quant("fixed", 0.0, width, 1 / 16)),
            ("y", Quant("fixed", 0.0, height, 1 / 16)),
            ("vx", Quant("fixed", -320.0, 320.0, 1 / 64)),
            ("vy", Quant("fixed", -320.0, 320.0, 1 / 64)),
        )
    )


def schema_for(game: str, constants: dict[str, Any] | None = None) -> ReplicationSchema:
    """The replication schema of a game by name (world size from its constants when given)."""
    c = constants or {}
    if game == "wander":
        return wander_schema(float(c.get("width", 1000.0)), float(c.get("height", 1000.0)))
    if game == "startales":
        return startales_schema(float(c.get("width", 4000.0)), float(c.get("height", 4000.0)))
    raise ValueError(f"no replication schema for game {game!r}")


def schema_to_wire(schema: ReplicationSchema) -> dict[str, Any]:
    """The schema as msgpack-able data, sent in the welcome so any client can dequantize."""
    return {
        "fields": [[n, q.kind, float(q.lo), float(q.hi), float(q.step)] for n, q in schema.fields],
        "pos": list(schema.pos),
    }


def schema_from_wire(spec: object) -> ReplicationSchema:
    """Inverse of `schema_to_wire`; ValueError on anything malformed."""
    if not isinstance(spec, dict) or not isinstance(spec.get("fields"), list):
        raise ValueError("replication schema must be a map with a 'fields' list")
    fields = []
    for f in spec["fields"]:
        if not (isinstance(f, list) and len(f) == 5 and isinstance(f[0], str) and f[1] in ("fixed", "int")):
            raise ValueError(f"bad schema field {f!r}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in f[2:]):
            raise ValueError(f"bad schema field {f!r}")
        fields.append((f[0], Quant(f[1], float(f[2]), float(f[3]), float(f[4]))))
    pos = spec.get("pos", ["x", "y"])
    if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, str) for p in pos)):
        raise ValueError("bad schema 'pos'")
    return ReplicationSchema(tuple(fields), (pos[0], pos[1]))


# -- the wire frame -----------------------------------------------------------------------------
class DeltaFrame(NamedTuple):
    tick: int  # snapshot id
    baseline: int  # snapshot id the delta applies to; 0 = empty baseline
    ack_seq: int  # newest input seq the server applied for this client
    body: bytes


def encode_delta_frame(tick: int, baseline: int, ack_seq: int, body: bytes | bytearray | memoryview) -> bytes:
    """``{"t":"d","k":tick,"b":baseline,"a":ack_seq,"e":bin}`` as msgpack."""
    return msgpack.packb({"t": DELTA_TYPE, "k": tick, "b": baseline, "a": ack_seq, "e": bytes(body)}, use_bin_type=True)


def decode_delta_frame(payload: bytes | bytearray | memoryview) -> DeltaFrame:
    """Parse a delta frame; ValueError when it is not one."""
    try:
        m = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True)
    except Exception as exc:
        raise ValueError(f"not msgpack: {exc}") from exc
    if not isinstance(m, dict) or m.get("t") != DELTA_TYPE:
        raise ValueError("not a delta frame")
    nums: list[int] = []
    for name in ("k", "b", "a"):
        v = m.get(name)
        if type(v) is not int or v < 0:
            raise ValueError(f"delta frame: bad {name!r}")
        nums.append(v)
    e = m.get("e")
    if not isinstance(e, bytes):
        raise ValueError("delta frame: bad 'e'")
    return DeltaFrame(nums[0], nums[1], nums[2], e)


# -- server -------------------------------------------------------------------------------------
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
        # encode-once cache of the current send (AOI off, no budget): baseline -> (seq, payload, ids, src)
        self._shared: dict[int, tuple[int, DeltaPayload, np.ndarray, np.ndarray]] = {}
        self.shared_hits = 0  # sorted ids every viewer sees (set by the engine)
        self.grid: AoiGrid | None = None
        if radius is not None:
            b = bounds or schema.bounds()
            self.grid = AoiGrid(capacity, b, radius if radius > 0 else b[2] - b[0])
        # per client: known sets by ring index (ids sorted, src seq), validity seq per ring index
        self._cl_seq = np.full((max_clients, RING), -1, dtype=np.int64)
        self._cl_ids: list[list[np.ndarray | None]] = [[None] * RING for _ in range(max_clients)]
        self._cl_src: list[list[np.ndarray | None]] = [[None] * RING for _ in range(max_clients)]
        self.prio = np.zeros((max_clients, capacity), dtype=np.float32)
        # visibility of the current send
        self._row_of = np.full(max_clients, -1, dtype=np.int64)
        self._vis_off = np.zeros(1, dtype=np.int64)
        self._vis_ids = np.zeros(0, dtype=np.uint32)
        self._view = np.zeros((max_clients, 3), dtype=np.float64)  # x, y, radius
        self._view_seq = np.zeros(max_clients, dtype=np.int64)
        # scratch
        self._out = np.zeros(1024, dtype=np.uint8)
        self._frames = np.zeros(1024, dtype=np.uint8)
        self.batch_stats = np.zeros((0, N_STATS), dtype=np.int64)  # per client of the last frames_for
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
        ids = np.ascontiguousarray(records["id"], dtype=np.uint32)
        slots = (ids & SLOT_MASK).astype(np.int64)
        q = self.schema.quantize(records)
        scatter_rows(slots, ids, q, self.id_ring[ri], self.q_ring[ri])
        xname, yname = self.schema.pos
        self.px[slots] = records[xname]
        self.py[slots] = records[yname]
        self._all_ids = np.sort(ids[ids != 0])
        if self.grid is not None:
            self.grid.build(self.px, self.py, self.id_ring[ri] != 0)
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
        client without a live entity, own slot -1, then sees nothing)."""
        clients_a = np.asarray(clients, dtype=np.int64)
        own = np.asarray(own_slots, dtype=np.int64)
        ri = self.seq % RING
        alive = own >= 0
        safe = np.where(alive, own, 0)
        alive &= self.id_ring[ri][safe] != 0
        vx = np.where(alive, self.px[safe], np.nan) if x is None else np.asarray(x, dtype=np.float64)
        vy = np.where(alive, self.py[safe], np.nan) if y is None else np.asarray(y, dtype=np.float64)
        r = self.radius if radius is None else radius
        vr = np.broadcast_to(np.asarray(np.inf if r is None else r, dtype=np.float64), vx.shape)
        self._view[clients_a, 0] = vx
        self._view[clients_a, 1] = vy
        self._view[clients_a, 2] = vr
        self._view_seq[clients_a] = self.seq
        if self.grid is None:
            return
        offsets, slots = self.grid.query(vx, vy, vr, own)
        vis = np.empty(slots.shape[0], dtype=np.uint32)
        slots_to_sorted_ids(offsets, slots, self.id_ring[ri], vis)
        offsets = offsets.copy()
        always = self.always
        if always.size:
            # Always-relevant entities (e.g. startales' planets) join every viewer's set.
            live = always[self.id_ring[ri][(always & SLOT_MASK).astype(np.int64)] == always]
            rows = [np.union1d(vis[offsets[k] : offsets[k + 1]], live) for k in range(len(offsets) - 1)]
            offsets[1:] = np.cumsum([r.shape[0] for r in rows])
            vis = np.concatenate(rows).astype(np.uint32) if rows else vis
        self._vis_off = offsets
        self._vis_ids = vis
        self._row_of[clients_a] = np.arange(len(clients_a))

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
                    ids, src = self._cl_ids[client][ri], self._cl_src[client][ri]
                    assert ids is not None and src is not None
                    return ack, ids, src
        return 0, self._empty_ids, self._empty_src

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
                _, payload, ids, src = hit
                ri = self.seq % RING
                self._cl_ids[client][ri], self._cl_src[client][ri] = ids, src
                self._cl_seq[client, ri] = self.seq
                self.prio[client] = 0.0
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
            float(vx), float(vy), float(vr), self.prio[client], np.int64(-1 if budget is None else budget),
            self._out, self._new_ids, self._new_src, self._c_kind, self._c_ref, self._c_cost, self._c_prio,
            self._c_sel, stats,
        )  # fmt: skip
        nk = int(stats[ST_KNOWN])
        ri = self.seq % RING
        self._cl_ids[client][ri] = self._new_ids[:nk].copy()
        self._cl_src[client][ri] = self._new_src[:nk].copy()
        self._cl_seq[client, ri] = self.seq
        payload = DeltaPayload(
            self.tick, baseline, self._out[:n].tobytes(), int(stats[ST_LEAVE]), int(stats[ST_UPDATE]),
            int(stats[ST_ENTER]), int(stats[ST_DEFERRED]), int(stats[ST_UPDATE_BYTES]), nk,
        )  # fmt: skip
        if shared:
            ids_a, src_a = self._cl_ids[client][ri], self._cl_src[client][ri]
            assert ids_a is not None and src_a is not None
            self._shared[baseline] = (self.seq, payload, ids_a, src_a)
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
        in order. With AOI off and no budget (the encode-once case) or a client listed twice it
        simply does that."""
        if self.seq == 0:
            raise RuntimeError("encode_for before begin_send")
        if budget is not None and budget < self.min_budget():
            raise ValueError(f"budget {budget} below the minimum {self.min_budget()}")
        cl = [int(c) for c in clients]
        nb = len(cl)
        if len(acks) != nb or len(ack_seqs) != nb:
            raise ValueError("clients, acks and ack_seqs differ in length")
        if nb == 0:
            return []
        if (self.grid is None and budget is None) or len(set(cl)) != nb:
            return [self.frame_for(c, a, int(s), budget) for c, a, s in zip(cl, acks, ack_seqs, strict=True)]
        cl_a = np.array(cl, dtype=np.int64)
        seq = self.seq
        if self.grid is None:
            vis_ids = self._all_ids
            vis_off = np.array([0, vis_ids.shape[0]], dtype=np.int64)
            rows = np.zeros(nb, dtype=np.int64)
        else:
            vis_ids, vis_off = self._vis_ids, self._vis_off
            rows = self._row_of[cl_a]
            if (rows < 0).any():
                bad = cl[int(np.argmax(rows < 0))]
                raise KeyError(f"client {bad} has no viewer in send {seq} (call set_viewers)")
        # baselines (the acknowledged snapshot's known set, when the server still holds it)
        tick_seq = self._tick_seq
        cl_seq = self._cl_seq
        baselines = np.zeros(nb, dtype=np.int64)
        b_ids: list[np.ndarray] = []
        b_src: list[np.ndarray] = []
        b_len = np.zeros(nb + 1, dtype=np.int64)
        for b, (c, ack) in enumerate(zip(cl, acks, strict=True)):
            if ack:
                s = tick_seq.get(ack)
                if s is not None:
                    ri = s % RING
                    if cl_seq[c, ri] == s:
                        ids, src = self._cl_ids[c][ri], self._cl_src[c][ri]
                        assert ids is not None and src is not None
                        baselines[b] = ack
                        b_ids.append(ids)
                        b_src.append(src)
                        b_len[b + 1] = ids.shape[0]
        base_off = np.cumsum(b_len)
        base_ids = np.concatenate(b_ids) if b_ids else self._empty_ids
        base_src = np.concatenate(b_src) if b_src else self._empty_src
        # sizes: every client's m + k, an unlimited body's bound, the frames
        need = b_len[1:] + (vis_off[rows + 1] - vis_off[rows])
        max_need = int(need.max())
        if max_need > self._scratch_n:
            self._alloc_scratch(max(max_need, 2 * self._scratch_n))
        F = self.schema.nfields
        max_bound = 16 + max_need * (15 + 10 * F)
        if self._out.shape[0] < max_bound:
            self._out = np.zeros(max(max_bound, 2 * self._out.shape[0]), dtype=np.uint8)
        body_bound = 16 + need * (15 + 10 * F)
        if budget is not None:
            body_bound = np.minimum(body_bound, budget)
        total = int(body_bound.sum()) + 46 * nb
        if self._frames.shape[0] < total:
            self._frames = np.zeros(max(total, 2 * self._frames.shape[0]), dtype=np.uint8)
        n_new = int(need.sum())
        new_ids = np.empty(n_new, dtype=np.uint32)
        new_src = np.empty(n_new, dtype=np.int64)
        view = self._view[cl_a]
        view[self._view_seq[cl_a] != seq] = 0.0
        view[~np.isfinite(view).all(axis=1), 2] = 0.0
        ack_seq_a = np.asarray(ack_seqs, dtype=np.int64).reshape(nb)
        if (ack_seq_a < 0).any():
            raise ValueError("negative ack_seq")
        frame_off = np.empty(nb + 1, dtype=np.int64)
        new_off = np.empty(nb + 1, dtype=np.int64)
        stats = np.zeros((nb, N_STATS), dtype=np.int64)
        frames = self._frames
        end = encode_batch(
            vis_ids, vis_off, rows, base_ids, base_src, base_off, self.q_ring, self.ring_seq, np.int64(seq),
            self.px, self.py, view, self.prio, cl_a, np.int64(-1 if budget is None else budget),
            np.int64(self.tick), baselines, ack_seq_a, frames, frame_off, new_ids, new_src, new_off,
            self._out, self._c_kind, self._c_ref, self._c_cost, self._c_prio, self._c_sel, stats,
        )  # fmt: skip
        self.batch_stats = stats
        # commit the known sets (views of one compact array per batch)
        nk = int(new_off[nb])
        ids_all = new_ids[:nk].copy()
        src_all = new_src[:nk].copy()
        ri = seq % RING
        cl_seq[cl_a, ri] = seq
        off = new_off.tolist()
        cl_ids, cl_src = self._cl_ids, self._cl_src
        for b, c in enumerate(cl):
            a, e = off[b], off[b + 1]
            cl_ids[c][ri] = ids_all[a:e]
            cl_src[c][ri] = src_all[a:e]
        whole = frames[:end].tobytes()
        fo = frame_off.tolist()
        return [whole[fo[b] : fo[b + 1]] for b in range(nb)]

    def min_budget(self) -> int:
        """The smallest legal budget: three counts plus the largest single item (an ABS update or
        an enter with 5-byte values) always fit, so the top-priority item is never blocked."""
        return 3 * 5 + 5 + 5 + 5 * self.schema.nfields

    def known(self, client: int, tick: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, src seq) the server recorded as known by the client after snapshot ``tick``."""
        seq = self._tick_seq.get(tick)
        if seq is None or self._cl_seq[client, seq % RING] != seq:
            return None
        ids, src = self._cl_ids[client][seq % RING], self._cl_src[client][seq % RING]
        assert ids is not None and src is not None
        return ids, src

    def forget(self, client: int) -> None:
        """Drop everything about a client slot (it left; the slot may be reused)."""
        self._cl_seq[client] = -1
        self._cl_ids[client] = [None] * RING
        self._cl_src[client] = [None] * RING
        self.prio[client] = 0.0
        self._row_of[client] = -1
        self._view_seq[client] = 0


# -- client -------------------------------------------------------------------------------------
class ReplicationDecoder:
    """Client side: a ring of the last RING decoded snapshots by id; applies each delta against the
    baseline it names (an empty one for 0); exposes the newest state dequantized."""

    def __init__(self, schema: ReplicationSchema, ring: int = RING) -> None:
        self.schema = schema
        self.ring = ring
        F = schema.nfields
        empty = (np.zeros(0, np.uint32), np.zeros((0, F), np.int32))
        self._snaps: dict[int, tuple[np.ndarray, np.ndarray]] = {0: empty}
        self.tick = 0  # newest snapshot id decoded (= the ack to send); 0 = none
        self.ids: np.ndarray = self._snaps[0][0]
        self.q: np.ndarray = self._snaps[0][1]
        self.ack_seq = 0
        self.dropped = 0  # frames whose baseline was unknown or whose body was malformed

    @property
    def ack(self) -> int:
        return self.tick

    def has(self, tick: int) -> bool:
        return tick in self._snaps

    def state(self, tick: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, quantized values) of a decoded snapshot still in the ring."""
        return self._snaps.get(tick) if tick else None

    def receive(self, payload: bytes | bytearray | memoryview) -> bool:
        """Decode one msgpack delta frame; False when it could not be applied."""
        fr = decode_delta_frame(payload)
        ok = self.apply(fr.tick, fr.baseline, fr.body)
        if ok and fr.tick == self.tick:
            self.ack_seq = fr.ack_seq
        return ok

    def apply(self, tick: int, baseline: int, body: bytes | bytearray | memoryview) -> bool:
        if tick <= 0:
            self.dropped += 1
            return False
        if tick in self._snaps:
            return True  # duplicate
        base = self._snaps.get(baseline)
        if base is None:
            self.dropped += 1
            return False
        base_ids, base_q = base
        buf = np.frombuffer(bytes(body), dtype=np.uint8)
        F = self.schema.nfields
        m = base_ids.shape[0]
        E = buf.shape[0] // (F + 1) + 1
        work = np.empty((m, F), dtype=np.int32)
        removed = np.empty(m, dtype=np.uint8)
        e_ids = np.empty(E, dtype=np.uint32)
        e_q = np.empty((E, F), dtype=np.int32)
        out_ids = np.empty(m + E, dtype=np.uint32)
        out_q = np.empty((m + E, F), dtype=np.int32)
        n = decode_body(buf, base_ids, base_q, work, removed, e_ids, e_q, out_ids, out_q)
        if n < 0:
            self.dropped += 1
            return False
        snap = (out_ids[:n].copy(), out_q[:n].copy())
        self._snaps[tick] = snap
        if len(self._snaps) > self.ring + 1:
            for old in sorted(t for t in self._snaps if t)[: len(self._snaps) - 1 - self.ring]:
                del self._snaps[old]
        if tick > self.tick:
            self.tick = tick
            self.ids, self.q = snap
        return True

    def values(self, name: str) -> np.ndarray:
        """Dequantized float64 values of one field for ``self.ids``."""
        f = self.schema.names.index(name)
        return self.schema.offset[f] + self.q[:, f].astype(np.float64) * self.schema.scale[f]

    def records(self, dtype: np.dtype | None = None) -> np.ndarray:
        """The newest entity set as a record array (``schema.dtype`` by default; any dtype with
        'id' and a subset of the schema's fields, e.g. the game's record dtype, also works)."""
        dt = self.schema.dtype if dtype is None else np.dtype(dtype)
        out = np.zeros(self.ids.shape[0], dtype=dt)
        out["id"] = self.ids
        deq = self.schema.dequantize(self.q)
        for f, name in enumerate(self.schema.names):
            if dt.names is not None and name in dt.names:
                out[name] = deq[:, f]
        return out


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
    dec.records()
