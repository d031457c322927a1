"""RFC 6455 framing that Arbiter writes and reads on its hot paths (Sans-I/O: bytes in, frames out).

websockets' Sans-I/O protocol builds a `Frame` object per message and parses it in a generator;
for the hot paths (the server reading one small masked input frame per client per tick, a bot
process reading thousands of server frames per second) a hand-written reader is several times
cheaper (docs/conformance.md has the numbers). It obeys RFC 6455 as websockets does, and the
Autobahn|Testsuite run in CI holds it to that (tests/test_autobahn.py):

- RSV bits must be 0 (no extension is ever negotiated), opcodes must be known (1002);
- control frames carry at most 125 bytes, are never fragmented, and may come between fragments;
- fragmented messages are reassembled up to `max_message` bytes (1009 above it);
- text must be valid UTF-8, checked as it arrives (even inside a frame) so a bad sequence fails at
  once (1007);
- a close frame's body is empty or a valid code plus UTF-8 reason (1002 / 1007);
- a 64-bit length must have its top bit clear (1002); frames are masked one way only (1002).

A read that holds good frames and then a bad one yields the good frames first, in order; the
error is kept in `FrameReader.error` and nothing after it is parsed.

The frame header is written in one place, `put_header`, a numba function: the batched snapshot
encoder (netcode/replication/group_kernels.py) calls it inside its kernel, and `frame_header`
(every other frame Python writes) takes its bytes from it.
"""

from __future__ import annotations

import codecs
import os
from typing import Final

import numpy as np
from numba import njit
from websockets.speedups import apply_mask

from sim.scalars import Int

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_KNOWN_OPS: Final = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
MAX_CONTROL: Final = 125  # RFC 6455 §5.5: a control frame's payload

# Close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL: Final = 1002
CLOSE_NO_STATUS: Final = 1005  # never on the wire: "the close frame had no code"
CLOSE_BAD_DATA: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009


def valid_close_code(code: int) -> bool:
    """A code an endpoint may put in a close frame: the defined 1000-1003 and 1007-1014 (1012-1014
    are IANA-registered since), 3000-3999 (registered) and 4000-4999 (private use)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


@njit(cache=True)
def put_header(buf: np.ndarray, pos: Int, b0: Int, mbit: Int, length: Int) -> int:
    """Write a frame header (first byte `b0` = FIN|RSV|opcode, `mbit` = 0x80 for a masked frame,
    the mask key itself not included) for a `length`-byte payload at buf[pos]; the new pos."""
    buf[pos] = np.uint8(b0)
    if length < 126:
        buf[pos + 1] = np.uint8(mbit | length)
        return pos + 2
    if length < 0x10000:
        buf[pos + 1] = np.uint8(mbit | 126)
        buf[pos + 2] = np.uint8((length >> 8) & 0xFF)
        buf[pos + 3] = np.uint8(length & 0xFF)
        return pos + 4
    buf[pos + 1] = np.uint8(mbit | 127)
    for s in range(8):
        buf[pos + 9 - s] = np.uint8((length >> (8 * s)) & 0xFF)
    return pos + 10


_scratch = np.zeros(10, dtype=np.uint8)


def _header_bytes(b0: int, mbit: int, length: int) -> bytes:
    n = put_header(_scratch, 0, b0, mbit, length)
    return _scratch[:n].tobytes()


# Short headers are looked up, not computed: a numba call from Python costs ~0.3 µs.
_SHORT: Final = {(op, m): [_header_bytes(0x80 | op, m, n) for n in range(126)] for op in _KNOWN_OPS for m in (0, 0x80)}


def frame_header(opcode: int, length: int, masked: bool = False) -> bytes:
    """Header of a final (FIN) frame carrying `length` payload bytes (without the mask key)."""
    mbit = 0x80 if masked else 0
    if length < 126:
        return _SHORT[opcode, mbit][length]
    return _header_bytes(0x80 | opcode, mbit, length)


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
    return b"".join((frame_header(opcode, len(payload), masked=True), key, apply_mask(payload, key)))


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body: `code` (must be valid_close_code) and the reason cut to fit 125 bytes
    on a UTF-8 character boundary."""
    if not valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")[: MAX_CONTROL - 2]
    return code.to_bytes(2, "big") + raw.decode("utf-8", "ignore").encode("utf-8")


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame's body; (1005, "") for an empty one. Raises FrameError for
    a 1-byte body, a code no endpoint may send (1002) or a reason that is not UTF-8 (1007)."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL, "close frame with a 1-byte body")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        raise FrameError(CLOSE_PROTOCOL, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_BAD_DATA, "close reason is not UTF-8") from None
    return code, reason


class FrameError(ValueError):
    """The peer broke RFC 6455 or our limits; `code` is the close code to fail the connection with."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class FrameReader:
    """Incremental frame reader: masked client→server frames (`masked=True`) or unmasked
    server→client ones.

    `feed(data)` returns the complete data messages and control frames as `(opcode, payload)`
    pairs, fragments reassembled; a close frame is returned once validated (see `parse_close`),
    and nothing after it is parsed. Breaking a rule stops the reader: `error` holds the FrameError
    (its close code), and `feed` returns the frames before it, then nothing more.

    Memory is bounded by `max_size` + 14 bytes of partial frame plus `max_message` bytes of a
    fragmented message: a length is checked on the header, before any payload is buffered.
    """

    __slots__ = (
        "_buf",
        "_frag",
        "_frag_op",
        "_partial_done",
        "_partial_utf8",
        "_skip",
        "_utf8",
        "closed",
        "error",
        "masked",
        "max_message",
        "max_size",
        "truncate_at",
        "truncate_over",
    )

    def __init__(self, max_size: int = 1 << 24, masked: bool = False, max_message: int | None = None) -> None:
        self._buf = bytearray()
        self._frag: bytearray | None = None
        self._frag_op = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        # A text frame still arriving: how many of its payload bytes are checked, and the check's state.
        self._partial_done = 0
        self._partial_utf8: codecs.IncrementalDecoder | None = None
        self.max_size = max_size
        self.max_message = max_size if max_message is None else max_message
        self.masked = masked
        self.error: FrameError | None = None
        self.closed = False  # a close frame was read: what follows is ignored (RFC 6455 §5.5.1)
        # Count-only readers (load bots) set this: an unmasked FIN data frame longer than
        # `truncate_over` is delivered as its first `truncate_at` bytes and the rest is dropped as it arrives, so a
        # 40 KB snapshot costs no buffering or copying beyond the recv() itself.
        self.truncate_at: int | None = None
        self.truncate_over = 4096
        self._skip = 0

    @property
    def pending(self) -> bool:
        """True while part of a frame or message is buffered (or being skipped), or the reader stopped."""
        return bool(self._buf) or self._frag is not None or self._skip > 0 or self.error is not None or self.closed

    @property
    def buffered(self) -> int:
        """Bytes held: a partial frame plus a partial fragmented message."""
        return len(self._buf) + (len(self._frag) if self._frag is not None else 0)

    def _fail(self, code: int, msg: str) -> None:
        self.error = FrameError(code, msg)
        self._buf.clear()
        self._frag = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.error is not None or self.closed:
            return []
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
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if b0 & 0x70:
                self._fail(CLOSE_PROTOCOL, "reserved bits set")
                return out
            if opcode not in _KNOWN_OPS:
                self._fail(CLOSE_PROTOCOL, f"unknown opcode {opcode}")
                return out
            length = b1 & 0x7F
            masked = b1 & 0x80
            if bool(masked) != self.masked:
                self._fail(CLOSE_PROTOCOL, "client frames must be masked" if self.masked else "masked server frame")
                return out
            if opcode & 0x8 and (not fin or length > MAX_CONTROL):
                self._fail(CLOSE_PROTOCOL, "fragmented or oversized control frame")
                return out
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                if length >> 63:
                    self._fail(CLOSE_PROTOCOL, "64-bit length with its top bit set")
                    return out
                hdr = 10
            if masked:
                hdr += 4
            if length > self.max_size:
                self._fail(CLOSE_TOO_BIG, f"frame of {length} bytes exceeds max_size {self.max_size}")
                return out
            end = pos + hdr + length
            cut = self.truncate_at
            if cut is not None and length > self.truncate_over and fin and opcode in (OP_TEXT, OP_BINARY):
                if self._frag is not None:
                    self._fail(CLOSE_PROTOCOL, "data frame inside a fragmented message")
                    return out
                if n - pos < hdr + cut:
                    break
                out.append((opcode, bytes(buf[pos + hdr : pos + hdr + cut])))
                if end > n:
                    self._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                if (opcode == OP_TEXT or (opcode == OP_CONT and self._utf8 is not None)) and not self._text_so_far(
                    buf, pos + hdr, n, masked
                ):
                    return out
                break
            payload = bytes(buf[pos + hdr : end])
            if masked:
                payload = apply_mask(payload, bytes(buf[pos + hdr - 4 : pos + hdr]))
            pos = end
            if self._partial_done:
                self._partial_done = 0
                self._partial_utf8 = None
            if opcode & 0x8:
                if opcode == OP_CLOSE:
                    try:
                        parse_close(payload)
                    except FrameError as exc:
                        self._fail(exc.code, str(exc))
                        return out
                    out.append((opcode, payload))
                    self.closed = True
                    buf.clear()
                    return out
                out.append((opcode, payload))
                continue
            if not self._data_frame(opcode, fin, payload, out):
                return out
        if pos:
            del buf[:pos]
        return out

    def _text_so_far(self, buf: bytearray, start: int, n: int, masked: int) -> bool:
        """Check the UTF-8 of a text frame that is still arriving, as far as it has come, so that
        a bad sequence fails the connection at once (Autobahn 6.4.3/6.4.4); False after an error."""
        done = self._partial_done
        if n - start <= done:
            return True
        chunk = bytes(buf[start + done : n])
        if masked:
            key = bytes(buf[start - 4 : start])
            r = done % 4
            chunk = apply_mask(chunk, key[r:] + key[:r])
        dec = self._partial_utf8
        if dec is None:
            dec = self._partial_utf8 = _Utf8Decoder()
            if self._utf8 is not None:  # a fragment: go on from where the message's check stands
                dec.setstate(self._utf8.getstate())
        try:
            dec.decode(chunk, final=False)
        except UnicodeDecodeError:
            self._fail(CLOSE_BAD_DATA, "text message is not UTF-8")
            return False
        self._partial_done = n - start
        return True

    def _data_frame(self, opcode: int, fin: int, payload: bytes, out: list[tuple[int, bytes]]) -> bool:
        """File one data frame (a whole message or a fragment); False after an error."""
        frag = self._frag
        if opcode == OP_CONT:
            if frag is None:
                self._fail(CLOSE_PROTOCOL, "continuation frame without a message")
                return False
            if len(frag) + len(payload) > self.max_message:
                self._fail(CLOSE_TOO_BIG, f"message exceeds {self.max_message} bytes")
                return False
            frag += payload
            opcode = self._frag_op
        elif frag is not None:
            self._fail(CLOSE_PROTOCOL, "new message before the fragmented one ended")
            return False
        elif not fin:
            self._frag = frag = bytearray(payload)
            self._frag_op = opcode
            if opcode == OP_TEXT:
                self._utf8 = _Utf8Decoder()
        elif opcode == OP_TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(CLOSE_BAD_DATA, "text message is not UTF-8")
                return False
            out.append((opcode, payload))
            return True
        else:
            out.append((opcode, payload))
            return True
        # A fragment: text is checked as it arrives, so a bad sequence fails before the message ends.
        utf8 = self._utf8
        if utf8 is not None:
            try:
                utf8.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                self._fail(CLOSE_BAD_DATA, "text message is not UTF-8")
                return False
        if fin:
            out.append((opcode, bytes(frag)))
            self._frag = None
            self._utf8 = None
        return True
