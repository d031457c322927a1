"""Binary encoding of one tick's journal record. Pure functions, no I/O.

Layout (all integers little-endian; see docs/durability.md):

    u8     magic 0xA7
    u8     format version (FORMAT = 3)
    varint tick
    varint n_joins, varint n_leaves, varint n_inputs
    varint column mask (only when n_inputs > 0): bit c set = column c of the layout is present
    n_joins  x (u32 eid, varint key_len, key_len bytes of UTF-8)
    n_leaves x u32 eid
    n_inputs x the present columns of the input layout, packed
    u32    CRC32 (zlib.crc32) of every byte before it

The input layout is the campaign's: the packed record dtype the game's input batch derives
(sim/inputs.py `input_dtype`), stored once in the campaign's metadata (`layout_to_json`). A column
that is zero in every input of the tick is left out, so a tick pays only for the fields its inputs
use (startales' transfers, a game's rarely used arguments). Inputs are raw bytes rather than
varint/delta-coded: the encoder runs on the tick thread, where two numpy calls cost less than
per-field bit twiddling in Python.

Formats 1 and 2 (before the game API: fixed dx, dy, action, arg[, arg2, arg3, txn] inputs) are
refused with `JournalFormatError`; there is no migration.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

MAGIC: Final = 0xA7
FORMAT: Final = 3
OLD_FORMATS: Final = {1: "compact fixed inputs", 2: "extended fixed inputs"}

_U32 = struct.Struct("<I")
_MAX_TICK: Final = (1 << 63) - 1
# A varint of more than 10 bytes cannot hold a u64; reading further would only chase garbage.
_MAX_VARINT_BYTES: Final = 10
_FORMATS: Final = frozenset({"<u1", "<i1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<f4", "<u8", "<i8", "<f8"})


class JournalCorruptError(ValueError):
    """The blob is not a valid, intact journal record (torn, flipped bits, wrong format)."""


class JournalFormatError(JournalCorruptError):
    """An intact record (or campaign) of a journal format this version does not read."""


def format_error(version: object) -> JournalFormatError:
    what = OLD_FORMATS.get(version, "unknown") if isinstance(version, int) else "fixed inputs"
    return JournalFormatError(
        f"journal format {version} ({what}) was written by an older Arbiter; this one reads format {FORMAT} "
        "only: replay it with the Arbiter that wrote it, or start a new campaign"
    )


def campaign_layout(meta: Mapping[str, str]) -> np.dtype:
    """The input layout of a campaign from its metadata; JournalFormatError for another format
    (campaigns written before format 3 have no `journal_format` key: they hold format 1 or 2)."""
    version = meta.get("journal_format")
    if version != str(FORMAT):
        raise format_error(int(version) if version and version.isdigit() else "1-2")
    return layout_from_json(meta.get("input_layout", ""))


def campaign_format_meta(layout: np.dtype) -> dict[str, str]:
    """The metadata keys a new campaign stores for its journal."""
    return {"journal_format": str(FORMAT), "input_layout": layout_to_json(layout)}


def layout_to_json(layout: np.dtype) -> str:
    """The input layout as stored in a campaign's metadata: [[name, format], ...]."""
    return json.dumps([[n, layout[n].str] for n in layout.names or ()], separators=(",", ":"))


def layout_from_json(text: str) -> np.dtype:
    """Inverse of `layout_to_json`; JournalFormatError when it is not a packed layout of numbers."""
    try:
        fields = [(str(n), str(f)) for n, f in json.loads(text)]
    except (ValueError, TypeError) as exc:
        raise JournalFormatError(f"bad input layout in the campaign metadata: {exc}") from None
    if not fields or any(f not in _FORMATS for _, f in fields) or fields[0][0] != "eid":
        raise JournalFormatError(f"bad input layout in the campaign metadata: {text[:200]}")
    return np.dtype(fields)


class Layout:
    """One input layout with what the codec needs of it: column byte offsets and, per column
    mask, the packed dtype of the present columns (cached)."""

    def __init__(self, dtype: np.dtype) -> None:
        if dtype.names is None or dtype.isalignedstruct:
            raise ValueError("an input layout is a packed record dtype")
        self.dtype = dtype
        self.names: tuple[str, ...] = dtype.names
        self.offsets = np.array([dtype.fields[n][1] for n in self.names], dtype=np.int64)  # type: ignore[index]
        self.full = (1 << len(self.names)) - 1
        # (start, end, zero bytes) of each column within a record
        self.spans: tuple[tuple[int, int, bytes], ...] = tuple(
            (int(o), int(o) + dtype[n].itemsize, bytes(dtype[n].itemsize))
            for o, n in zip(self.offsets, self.names, strict=True)
        )
        self._sub: dict[int, tuple[np.dtype, np.ndarray]] = {}

    def present(self, mask: int) -> tuple[np.dtype, np.ndarray]:
        """(packed dtype of the columns in `mask`, their byte indexes within a full record)."""
        hit = self._sub.get(mask)
        if hit is None:
            if mask & ~self.full:
                raise JournalCorruptError(f"column mask {mask:#x} names columns the layout does not have")
            cols = [c for c in range(len(self.names)) if mask >> c & 1]
            sub = np.dtype([(self.names[c], self.dtype[self.names[c]]) for c in cols])
            idx = np.concatenate(
                [np.arange(self.offsets[c], self.offsets[c] + self.dtype[self.names[c]].itemsize) for c in cols]
            ) if cols else np.zeros(0, dtype=np.int64)  # fmt: skip
            hit = self._sub[mask] = (sub, idx.astype(np.int64))
        return hit

    def expand(self, rows: np.ndarray) -> np.ndarray:
        """Rows of some present columns as full-layout records (absent columns 0)."""
        if rows.dtype == self.dtype:
            return rows.copy()
        out = np.zeros(len(rows), dtype=self.dtype)
        for name in rows.dtype.names or ():
            out[name] = rows[name]
        return out


_layouts: dict[np.dtype, Layout] = {}


def layout_of(dtype: np.dtype) -> Layout:
    hit = _layouts.get(dtype)
    if hit is None:
        hit = _layouts[dtype] = Layout(dtype)
    return hit


@dataclass(frozen=True, eq=False)
class TickRecord:
    """What the sim consumed in the step that took the world from tick `tick - 1` to `tick`."""

    tick: int
    joins: list[tuple[int, str]]
    leaves: list[int]
    inputs: np.ndarray  # full-layout records, 1-D, in the order the sim applied them

    def __eq__(self, other: object) -> bool:
        # numpy's elementwise == would make tuple/dataclass equality ambiguous; compare bytes instead.
        if not isinstance(other, TickRecord):
            return NotImplemented
        return (
            self.tick == other.tick
            and self.joins == other.joins
            and self.leaves == other.leaves
            and self.inputs.dtype == other.inputs.dtype
            and self.inputs.shape == other.inputs.shape
            and self.inputs.tobytes() == other.inputs.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at buf[pos]; JournalCorruptError past `end`."""
    result = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise JournalCorruptError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result, pos
    raise JournalCorruptError("varint too long")


def _check_u32(value: int, what: str) -> int:
    value = int(value)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} does not fit in uint32")
    return value


def encode_tick(
    tick: int,
    joins: Sequence[tuple[int, str]],
    leaves: Sequence[int],
    inputs: np.ndarray,
) -> bytes:
    """Encode one tick's record; `inputs` are records of the campaign's input layout."""
    tick = int(tick)
    if not 0 <= tick <= _MAX_TICK:
        raise ValueError(f"tick {tick} out of range")
    if not joins and not leaves and not len(inputs):
        # The common record of a quiet campaign: header, tick, three zero counts, CRC.
        empty = bytearray((MAGIC, FORMAT))
        _put_varint(empty, tick)
        empty += b"\x00\x00\x00"
        empty += _U32.pack(zlib.crc32(empty))
        return bytes(empty)
    if inputs.ndim != 1:
        raise ValueError(f"inputs must be 1-D, got shape {inputs.shape}")
    layout = layout_of(inputs.dtype)
    out = bytearray((MAGIC, FORMAT))
    _put_varint(out, tick)
    _put_varint(out, len(joins))
    _put_varint(out, len(leaves))
    _put_varint(out, len(inputs))
    body = b""
    if len(inputs):
        mask, body = (_columns_small if len(inputs) <= _SMALL else _columns)(inputs, layout)
        _put_varint(out, mask)
    for eid, key in joins:
        out += _U32.pack(_check_u32(eid, "join eid"))
        raw_key = key.encode("utf-8")
        _put_varint(out, len(raw_key))
        out += raw_key
    for eid in leaves:
        out += _U32.pack(_check_u32(eid, "leave eid"))
    out += body
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


_SMALL: Final = 16  # inputs in a tick up to which the columns are found in Python (no numpy call overhead)


def _columns(inputs: np.ndarray, layout: Layout) -> tuple[int, bytes]:
    """(mask of the columns any input uses, the inputs' bytes of those columns, row by row)."""
    raw = np.ascontiguousarray(inputs).view(np.uint8).reshape(len(inputs), layout.dtype.itemsize)
    used = np.logical_or.reduceat(raw.any(axis=0), layout.offsets)
    mask = int(np.dot(used.astype(np.int64), 1 << np.arange(len(used), dtype=np.int64)))
    return mask, raw.tobytes() if mask == layout.full else raw[:, layout.present(mask)[1]].tobytes()


def _columns_small(inputs: np.ndarray, layout: Layout) -> tuple[int, bytes]:
    """`_columns` for a few inputs (a small campaign's tick), byte for byte, in plain Python: a
    dozen numpy calls cost more than the work."""
    data = inputs.tobytes()
    size = layout.dtype.itemsize
    rows = range(0, len(data), size)
    mask = 0
    for c, (a, b, zero) in enumerate(layout.spans):
        if any(data[r + a : r + b] != zero for r in rows):
            mask |= 1 << c
    if mask == layout.full:
        return mask, data
    spans = [(a, b) for c, (a, b, _) in enumerate(layout.spans) if mask >> c & 1]
    return mask, b"".join(data[r + a : r + b] for r in rows for a, b in spans)


def decode_tick(blob: bytes, layout: np.dtype, *, expand: bool = True) -> TickRecord:
    """Decode and verify a record; raises JournalCorruptError on any inconsistency (JournalFormatError
    for a record of another format). `expand=False` keeps the inputs as the present columns only."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise JournalCorruptError(f"record is {type(blob).__name__}, not bytes")
    buf = bytes(blob)
    # 2 header bytes + 4 one-byte varints + CRC is the smallest possible record.
    if len(buf) < 10:
        raise JournalCorruptError(f"record too short ({len(buf)} bytes)")
    end = len(buf) - 4
    (stored_crc,) = _U32.unpack_from(buf, end)
    if zlib.crc32(memoryview(buf)[:end]) != stored_crc:
        raise JournalCorruptError("CRC mismatch")
    if buf[0] != MAGIC:
        raise JournalCorruptError(f"bad magic 0x{buf[0]:02x}")
    if buf[1] != FORMAT:
        raise format_error(buf[1])
    pos = 2
    tick, pos = get_varint(buf, pos, end)
    n_joins, pos = get_varint(buf, pos, end)
    n_leaves, pos = get_varint(buf, pos, end)
    n_inputs, pos = get_varint(buf, pos, end)
    if tick > _MAX_TICK:
        raise JournalCorruptError("tick out of range")
    lay = layout_of(layout)
    sub = lay.dtype
    if n_inputs:
        mask, pos = get_varint(buf, pos, end)
        sub = lay.present(mask)[0]
    rec_size = sub.itemsize
    # Bound the counts by the bytes present before allocating anything for them.
    if n_joins * 5 + n_leaves * 4 + n_inputs * rec_size > end - pos:
        raise JournalCorruptError("counts exceed record length")
    joins: list[tuple[int, str]] = []
    for _ in range(n_joins):
        if pos + 4 > end:
            raise JournalCorruptError("truncated join")
        (eid,) = _U32.unpack_from(buf, pos)
        key_len, pos = get_varint(buf, pos + 4, end)
        if pos + key_len > end:
            raise JournalCorruptError("truncated join key")
        try:
            key = buf[pos : pos + key_len].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JournalCorruptError("join key is not UTF-8") from exc
        pos += key_len
        joins.append((eid, key))
    if pos + n_leaves * 4 + n_inputs * rec_size != end:
        raise JournalCorruptError("record length does not match its counts")
    leaves = list(struct.unpack_from(f"<{n_leaves}I", buf, pos))
    pos += n_leaves * 4
    raw = np.frombuffer(buf, dtype=sub, count=n_inputs, offset=pos)
    # Copy so the caller owns a writable array independent of the blob.
    inputs = lay.expand(raw) if expand else raw.copy()
    return TickRecord(tick=tick, joins=joins, leaves=leaves, inputs=inputs)


def record_overhead(tick: int, layout: np.dtype, joins: Sequence[tuple[int, str]] = (), n_leaves: int = 0) -> int:
    """Bytes of a record besides its inputs (header, joins, leaves, CRC): for sizing and reports."""
    return len(encode_tick(tick, joins, [0] * n_leaves, np.zeros(0, dtype=layout)))
