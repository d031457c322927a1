"""Binary encoding of one tick's journal record. Pure functions, no I/O.

Layout (all integers little-endian; see docs/durability.md):

    u8     magic 0xA7
    u8     version: 1 = compact inputs (28 bytes), 2 = extended inputs (40 bytes)
    varint tick
    varint n_joins, varint n_leaves, varint n_inputs
    n_joins  x (u32 eid, varint key_len, key_len bytes of UTF-8)
    n_leaves x u32 eid
    n_inputs x 28 bytes (COMPACT_INPUT_DTYPE) or 40 bytes (JOURNAL_INPUT_DTYPE), packed
    u32    CRC32 (zlib.crc32) of every byte before it

Inputs are copied as raw bytes rather than varint/delta-coded: the encoder runs on the tick thread,
and one `tobytes()` is cheaper there than per-field bit twiddling in Python. The disk can afford 28 bytes.
A tick whose inputs all have zero arg2, arg3 and txn (nearly every tick: only transfers use them) is
written compact, as version 1 — which is also what journals written before transfers existed hold.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

MAGIC: Final = 0xA7
VERSION_COMPACT: Final = 1
VERSION_EXTENDED: Final = 2

_COMPACT_FIELDS: Final = [
    ("eid", "<u4"),
    ("seq", "<u4"),
    ("client_tick", "<u4"),
    ("dx", "<f4"),
    ("dy", "<f4"),
    ("action", "<i4"),
    ("arg", "<i4"),
]
COMPACT_INPUT_DTYPE: Final = np.dtype(_COMPACT_FIELDS)
JOURNAL_INPUT_DTYPE: Final = np.dtype([*_COMPACT_FIELDS, ("arg2", "<i4"), ("arg3", "<i4"), ("txn", "<u4")])
INPUT_RECORD_SIZE: Final = COMPACT_INPUT_DTYPE.itemsize  # 28
EXTENDED_RECORD_SIZE: Final = JOURNAL_INPUT_DTYPE.itemsize  # 40
_EXTRA_FIELDS: Final = ("arg2", "arg3", "txn")

_U32 = struct.Struct("<I")
_MAX_TICK: Final = (1 << 63) - 1
# A varint of more than 10 bytes cannot hold a u64; reading further would only chase garbage.
_MAX_VARINT_BYTES: Final = 10


class JournalCorruptError(ValueError):
    """The blob is not a valid, intact journal record (torn, flipped bits, wrong format)."""


@dataclass(frozen=True, eq=False)
class TickRecord:
    """What the sim consumed in the step that took the world from tick `tick - 1` to `tick`."""

    tick: int
    joins: list[tuple[int, str]]
    leaves: list[int]
    inputs: np.ndarray  # JOURNAL_INPUT_DTYPE, 1-D, in the order the sim applied them

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


def make_inputs(n: int) -> np.ndarray:
    """A zeroed input array of `n` records, ready to fill."""
    return np.zeros(n, dtype=JOURNAL_INPUT_DTYPE)


def inputs_from_columns(
    eid: np.ndarray,
    seq: np.ndarray,
    client_tick: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    action: np.ndarray,
    arg: np.ndarray,
    arg2: np.ndarray | None = None,
    arg3: np.ndarray | None = None,
    txn: np.ndarray | None = None,
) -> np.ndarray:
    """Pack struct-of-arrays input columns (e.g. an InputBatch sliced to [:n]) into journal records."""
    n = len(eid)
    out = np.empty(n, dtype=JOURNAL_INPUT_DTYPE)
    out["eid"] = eid
    out["seq"] = seq
    out["client_tick"] = client_tick
    out["dx"] = dx
    out["dy"] = dy
    out["action"] = action
    out["arg"] = arg
    for name, col in (("arg2", arg2), ("arg3", arg3), ("txn", txn)):
        out[name] = 0 if col is None else col
    return out


def _as_journal_inputs(inputs: np.ndarray) -> np.ndarray:
    if inputs.ndim != 1:
        raise ValueError(f"inputs must be 1-D, got shape {inputs.shape}")
    if inputs.dtype == JOURNAL_INPUT_DTYPE:
        return np.ascontiguousarray(inputs)
    # Structured astype assigns by position, so only accept the same field names in the same order
    # (e.g. a big-endian or aligned variant); anything else would be silently scrambled.
    if inputs.dtype.names != JOURNAL_INPUT_DTYPE.names:
        raise TypeError(f"inputs dtype {inputs.dtype} is not JOURNAL_INPUT_DTYPE")
    return inputs.astype(JOURNAL_INPUT_DTYPE)


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
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
    """Encode one tick's journal record (see the module docstring for the layout)."""
    tick = int(tick)
    if not 0 <= tick <= _MAX_TICK:
        raise ValueError(f"tick {tick} out of range")
    arr = _as_journal_inputs(inputs)
    extended = len(arr) > 0 and any(arr[name].any() for name in _EXTRA_FIELDS)
    if not extended:
        arr = arr[list(COMPACT_INPUT_DTYPE.names or ())].astype(COMPACT_INPUT_DTYPE) if len(arr) else arr[:0]
    out = bytearray((MAGIC, VERSION_EXTENDED if extended else VERSION_COMPACT))
    _put_varint(out, tick)
    _put_varint(out, len(joins))
    _put_varint(out, len(leaves))
    _put_varint(out, len(arr))
    for eid, key in joins:
        out += _U32.pack(_check_u32(eid, "join eid"))
        raw_key = key.encode("utf-8")
        _put_varint(out, len(raw_key))
        out += raw_key
    for eid in leaves:
        out += _U32.pack(_check_u32(eid, "leave eid"))
    out += arr.tobytes()
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


def decode_tick(blob: bytes) -> TickRecord:
    """Decode and verify a record; raises JournalCorruptError on any inconsistency."""
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
    if buf[1] not in (VERSION_COMPACT, VERSION_EXTENDED):
        raise JournalCorruptError(f"unsupported version {buf[1]}")
    rec_dtype = COMPACT_INPUT_DTYPE if buf[1] == VERSION_COMPACT else JOURNAL_INPUT_DTYPE
    rec_size = rec_dtype.itemsize
    pos = 2
    tick, pos = _get_varint(buf, pos, end)
    n_joins, pos = _get_varint(buf, pos, end)
    n_leaves, pos = _get_varint(buf, pos, end)
    n_inputs, pos = _get_varint(buf, pos, end)
    if tick > _MAX_TICK:
        raise JournalCorruptError("tick out of range")
    # Bound the counts by the bytes present before allocating anything for them.
    if n_joins * 5 + n_leaves * 4 + n_inputs * rec_size > end - pos:
        raise JournalCorruptError("counts exceed record length")
    joins: list[tuple[int, str]] = []
    for _ in range(n_joins):
        if pos + 4 > end:
            raise JournalCorruptError("truncated join")
        (eid,) = _U32.unpack_from(buf, pos)
        key_len, pos = _get_varint(buf, pos + 4, end)
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
    # Copy so the caller owns a writable array independent of the blob.
    raw = np.frombuffer(buf, dtype=rec_dtype, count=n_inputs, offset=pos)
    if rec_dtype is JOURNAL_INPUT_DTYPE:
        inputs = raw.copy()
    else:
        inputs = np.zeros(n_inputs, dtype=JOURNAL_INPUT_DTYPE)
        for name in COMPACT_INPUT_DTYPE.names or ():
            inputs[name] = raw[name]
    return TickRecord(tick=tick, joins=joins, leaves=leaves, inputs=inputs)


def record_overhead(tick: int, joins: Sequence[tuple[int, str]] = (), n_leaves: int = 0) -> int:
    """Bytes of a record besides its inputs (header, joins, leaves, CRC): for sizing and reports."""
    return len(encode_tick(tick, joins, [0] * n_leaves, make_inputs(0)))
