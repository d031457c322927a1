"""Canonical 64-bit state hash of a World, computed in numba (no hashlib).

Every array, in sorted name order, contributes a header (name, little-endian dtype string, shape)
and its raw little-endian bytes. The mixing is an xxh64-style 4-lane loop over 8-byte words plus a
byte tail, so the result depends only on the state, never on the process or platform byte order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.world import World

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_R1 = np.uint64(1)
_R7 = np.uint64(7)
_R11 = np.uint64(11)
_R12 = np.uint64(12)
_R18 = np.uint64(18)
_R27 = np.uint64(27)
_R31 = np.uint64(31)
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S33 = np.uint64(33)
_U64 = np.uint64(64)
_ZERO = np.uint64(0)
_EIGHT = np.uint64(8)


@njit(cache=True)
def _rotl(x: np.uint64, r: np.uint64) -> np.uint64:
    return (x << r) | (x >> (_U64 - r))


@njit(cache=True)
def _round(acc: np.uint64, w: np.uint64) -> np.uint64:
    return _rotl(acc + w * _P2, _R31) * _P1


@njit(cache=True)
def _merge(acc: np.uint64, v: np.uint64) -> np.uint64:
    return (acc ^ _round(_ZERO, v)) * _P1 + _P4


@njit(cache=True, nogil=True)  # nogil: snapshots are hashed off the tick thread
def absorb(h: np.uint64, words: np.ndarray, tail: np.ndarray) -> np.uint64:
    """Fold one segment (8-byte words, then < 8 tail bytes) into the running hash h."""
    n = words.shape[0]
    i = 0
    if n >= 4:
        v1 = h + _P1 + _P2
        v2 = h + _P2
        v3 = h
        v4 = h - _P1
        while i + 4 <= n:
            v1 = _round(v1, words[i])
            v2 = _round(v2, words[i + 1])
            v3 = _round(v3, words[i + 2])
            v4 = _round(v4, words[i + 3])
            i += 4
        acc = _rotl(v1, _R1) + _rotl(v2, _R7) + _rotl(v3, _R12) + _rotl(v4, _R18)
        acc = _merge(acc, v1)
        acc = _merge(acc, v2)
        acc = _merge(acc, v3)
        acc = _merge(acc, v4)
    else:
        acc = h + _P5
    acc += np.uint64(n) * _EIGHT + np.uint64(tail.shape[0])
    while i < n:
        acc ^= _round(_ZERO, words[i])
        acc = _rotl(acc, _R27) * _P1 + _P4
        i += 1
    for j in range(tail.shape[0]):
        acc ^= np.uint64(tail[j]) * _P5
        acc = _rotl(acc, _R11) * _P1
    acc ^= acc >> _S33
    acc *= _P2
    acc ^= acc >> _S29
    acc *= _P3
    acc ^= acc >> _S32
    return acc


_LE_U8 = np.dtype("<u8")


def _absorb_bytes(h: np.uint64, raw: np.ndarray) -> np.uint64:
    n8 = raw.shape[0] // 8
    words = raw[: n8 * 8].view(_LE_U8)
    if not words.dtype.isnative:  # big-endian host: read the words as little-endian values
        words = words.astype(np.uint64)
    return np.uint64(absorb(np.uint64(h), words, raw[n8 * 8 :]))


def array_bytes_le(arr: np.ndarray) -> np.ndarray:
    """The array's contents as little-endian bytes (uint8, C order)."""
    le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return le.reshape(-1).view(np.uint8)


def state_hash(world: World) -> int:
    h = np.uint64(0x243F6A8885A308D3)
    for name in world.names():
        arr = world.arrays[name]
        dt = arr.dtype.newbyteorder("<")
        header = name.encode() + b"\0" + dt.str.encode() + b"\0" + np.array(arr.shape, dtype="<i8").tobytes()
        h = _absorb_bytes(h, np.frombuffer(header, dtype=np.uint8))
        h = _absorb_bytes(h, array_bytes_le(arr))
    return int(h)
