"""Client side of delta replication: applies each delta frame against the baseline it names."""

from __future__ import annotations

import numpy as np

from netcode.replication.frames import decode_delta_frame
from netcode.replication.kernels import RING, decode_body
from netcode.replication.schema import ReplicationSchema


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
