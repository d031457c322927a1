"""The delta snapshot frame on the wire: ``{"t": "d", "k": tick, "b": baseline, "a": ack_seq, "e": body}``."""

from __future__ import annotations

from typing import Final, NamedTuple

import msgpack

from netcode.protocol import read_uint

DELTA_TYPE: Final = "d"


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


DELTA_PREFIX: Final = b"\x85\xa1t\xa1d\xa1k"  # fixmap(5) "t" "d" "k": how every server frame starts


def peek_delta_tick(payload: bytes) -> int | None:
    """The snapshot id of a delta frame laid out as the server writes it, from its first bytes
    only (count-only load clients acknowledge it without decoding); None for anything else."""
    if not payload.startswith(DELTA_PREFIX):
        return None
    try:
        tick, end = read_uint(payload, 7)
    except (IndexError, ValueError):
        return None
    return tick if end <= len(payload) else None
