"""RFC 6455 framing that Arbiter writes and reads on its hot paths.

websockets' Sans-I/O protocol builds a `Frame` object per message and serializes it in Python;
for the two hot paths (a server sending one unmasked binary frame per client per snapshot, and a
bot process reading thousands of unmasked server frames per second) a hand-built header is 30-40 %
cheaper (see ../shared/notes/stack-probe.md §3). Everything else (handshakes, control frames on the
server side, close handshakes) stays with websockets.
"""

from __future__ import annotations

import os
import struct

from websockets.speedups import apply_mask

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def frame_header(opcode: int, length: int, masked: bool = False) -> bytes:
    """Header of a final (FIN) frame carrying `length` payload bytes."""
    b0 = 0x80 | opcode
    mbit = 0x80 if masked else 0
    if length < 126:
        return bytes((b0, mbit | length))
    if length < 65536:
        return bytes((b0, mbit | 126)) + _U16.pack(length)
    return bytes((b0, mbit | 127)) + _U64.pack(length)


def server_frame(opcode: int, payload: bytes) -> bytes:
    return frame_header(opcode, len(payload)) + payload


class _MaskKeys:
    """Masking keys cut from one os.urandom block: as unpredictable as a urandom call per frame
    (RFC 6455 §5.3), at a tenth of the cost (a getrandom syscall per frame was ~0.5 µs)."""

    __slots__ = ("_block", "_pos")

    def __init__(self) -> None:
        self._block = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._block):
            self._block = os.urandom(4096)
            pos = 0
        self._pos = pos + 4
        return self._block[pos : pos + 4]


_mask_keys = _MaskKeys()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked frame, as RFC 6455 requires of clients."""
    key = _mask_keys.next()
    n = len(payload)
    if n < 126:
        return b"".join((bytes((0x80 | opcode, 0x80 | n)), key, apply_mask(payload, key)))
    return frame_header(opcode, n, masked=True) + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return _U16.pack(code) + reason.encode()[:120]


class FrameError(ValueError):
    """The peer broke RFC 6455 or our limits; `code` is the close code to fail the connection with."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code


class FrameReader:
    """Incremental frame reader: unmasked server→client frames, or masked client→server ones.

    `feed(data)` returns complete `(opcode, payload)` pairs. Fragmented messages are reassembled
    unless `allow_fragments` is False. Breaking a rule raises FrameError with the close code:
    1009 for a frame over `max_size` (checked on the header, before any payload is buffered),
    1002 for an unmasked frame where masking is required or a stray continuation, 1003 for a
    fragment where fragments are not allowed.
    """

    __slots__ = (
        "_buf",
        "_frag",
        "_frag_op",
        "_skip",
        "allow_fragments",
        "max_size",
        "require_mask",
        "truncate_at",
        "truncate_over",
    )

    def __init__(self, max_size: int = 1 << 24, require_mask: bool = False, allow_fragments: bool = True) -> None:
        self._buf = bytearray()
        self._frag: bytearray | None = None
        self._frag_op = 0
        self.max_size = max_size
        self.require_mask = require_mask
        self.allow_fragments = allow_fragments
        # Count-only readers (load bots) set this: an unmasked FIN data frame longer than
        # `truncate_over` is delivered as its first `truncate_at` bytes and the rest is dropped as it arrives, so a
        # 40 KB snapshot costs no buffering or copying beyond the recv() itself.
        self.truncate_at: int | None = None
        self.truncate_over = 4096
        self._skip = 0

    @property
    def pending(self) -> bool:
        """True while part of a frame or message is buffered (or being skipped)."""
        return bool(self._buf) or self._frag is not None or self._skip > 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = _U16.unpack_from(buf, pos + 2)[0]
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = _U64.unpack_from(buf, pos + 2)[0]
                hdr = 10
            masked = b1 & 0x80
            if masked:
                hdr += 4
            elif self.require_mask:
                raise FrameError(1002, "client frames must be masked")
            if length > self.max_size:
                raise FrameError(1009, f"frame of {length} bytes exceeds max_size {self.max_size}")
            end = pos + hdr + length
            cut = self.truncate_at
            whole_data = b0 & 0x80 and b0 & 0x0F in (OP_TEXT, OP_BINARY)
            if cut is not None and length > self.truncate_over and not masked and whole_data:
                if n - pos < hdr + cut:
                    break
                out.append((b0 & 0x0F, bytes(buf[pos + hdr : pos + hdr + cut])))
                if end > n:
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                break
            payload = bytes(buf[pos + hdr : end])
            if masked:
                payload = apply_mask(payload, bytes(buf[pos + hdr - 4 : pos + hdr]))
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_CONT:
                if self._frag is None:
                    raise FrameError(1002, "unexpected continuation frame")
                self._frag += payload
                if fin:
                    out.append((self._frag_op, bytes(self._frag)))
                    self._frag = None
            elif not fin and opcode in (OP_TEXT, OP_BINARY):
                if not self.allow_fragments:
                    raise FrameError(1003, "fragmented messages are not supported")
                self._frag = bytearray(payload)
                self._frag_op = opcode
            else:
                out.append((opcode, payload))
        if pos:
            del buf[:pos]
        return out
