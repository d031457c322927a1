"""The link between the tick process and a WebRTC relay worker (Sans-I/O): length-prefixed records.

One Unix stream socket per worker carries records ``<u32 length><u8 type><u32 client id><payload>``
(length counts type, id and payload). The tick process writes without awaiting and drops
superseded snapshots when a worker's backlog is over its bound; the worker writes inputs back the
same way. `RecordReader` refuses a record above MAX_RECORD: a corrupt stream is a dead worker.
Why a stream socket and not a shared-memory ring: bench/webrtc.py measures both directions of this
link at ~1-2 µs per record batched per send, far below aiortc's own ~60 µs per message, so a ring
would buy nothing measurable (docs/webrtc.md).
"""

from __future__ import annotations

import struct
from typing import Final

# tick process -> worker
OPEN: Final = 1  # payload: JSON {"sdp": offer, "slots": n}: answer it
CANDIDATE: Final = 2  # payload: JSON {"c", "mid", "ml"}: a trickled remote candidate
CLOSE: Final = 3  # close the client's peer connection
FAST: Final = 4  # payload: one message for the unordered, unreliable channel (snapshots)
RELIABLE: Final = 5  # payload: one message for the ordered, reliable channel (events, errors)
ROUTE: Final = 6  # payload: u32 client ids, one per voice slot (0: silent): whom this listener hears
MUTE: Final = 7  # payload: b"\x01" mute / b"\x00" unmute: drop this speaker's audio at the server

# worker -> tick process
ANSWER: Final = 16  # payload: SDP answer
UP: Final = 17  # both data channels are open
DOWN: Final = 18  # payload: utf-8 reason; the peer connection is gone (ICE failed, closed, ...)
INPUT: Final = 19  # payload: one message the client sent on either data channel
BEAT: Final = 20  # client id 0; payload: JSON counters. Sent every BEAT_INTERVAL seconds

BEAT_INTERVAL: Final = 0.25
HEADER: Final = struct.Struct("<IBI")
MAX_RECORD: Final = 1 << 20
_U32: Final = struct.Struct("<I")


class RecordError(ValueError):
    pass


def pack(kind: int, cid: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    return HEADER.pack(5 + len(payload), kind, cid) + bytes(payload)


def pack_route(cids: list[int]) -> bytes:
    return b"".join(_U32.pack(c) for c in cids)


def unpack_route(payload: bytes) -> list[int]:
    if len(payload) % 4:
        raise RecordError("route payload is not a whole number of u32")
    return [v for (v,) in _U32.iter_unpack(payload)]


class RecordReader:
    """Feed bytes as they arrive; get whole records back."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= HEADER.size:
            length, kind, cid = HEADER.unpack_from(buf, pos)
            if length < 5 or length > MAX_RECORD:
                raise RecordError(f"record length {length} outside [5, {MAX_RECORD}]")
            end = pos + 4 + length
            if end > n:
                break
            out.append((kind, cid, bytes(buf[pos + HEADER.size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
