"""Replication schemas: which fields of a game's entities are replicated and how they are quantized.

A game declares both with its components (sim/spec.py `Component(..., replicate=Fixed(...))`);
`schema_of` turns the declaration into a schema. A schema travels in the welcome
(`schema_to_wire`) so that any client can dequantize the delta snapshots of docs/replication.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from netcode.replication.kernels import quantize_kernel


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


def schema_of(fields: Sequence[tuple[str, str, float, float, float]]) -> ReplicationSchema:
    """The schema of a game's replicated fields: (name, "fixed" | "int", lo, hi, step) each, as
    `sim.game_api.Game.replicated_fields` gives them."""
    return ReplicationSchema(tuple((n, Quant(kind, lo, hi, step)) for n, kind, lo, hi, step in fields))  # type: ignore[arg-type]


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
