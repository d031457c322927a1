"""WebSocket server transport: an asyncio Protocol, websockets' Sans-I/O `ServerProtocol` for the
HTTP upgrade, then RFC 6455 frames read by `FrameReader`.

Why not `websockets.asyncio.server`: its per-connection reader task costs 15-17 µs per inbound
message and its `send()` awaits the socket (a stalled reader froze the whole tick in the probe).
Here a message costs no task wake-up: bytes go straight from `data_received` to the handler, and
`send_parts()` is a synchronous write that refuses (returns False) when the client's backlog is
over a bound, so the caller can drop a superseded snapshot instead of queueing without limit.

Every connection is bounded before anyone knows who it is (`DoorLimits`, docs/security.md):
- the HTTP request head is at most `max_request_bytes` and `max_headers` lines, read before
  websockets sees it (431 beyond); anything after a plain HTTP request is ignored (one answer,
  then `Connection: close`), and bytes pipelined behind an upgrade are read as frames;
- inbound: one partial frame (`max_size` + 14 bytes) and one partial message (`max_message`);
- outbound: reading pauses while the write buffer is over `pause_reading_at` (the peer must read
  to make us read), and a write that would push the buffer over `max_backlog` drops the connection;
- control frames: `control_rate`/s with a burst of `control_burst`; past that a ping is not
  answered at once but its payload kept, and only the newest such ping gets a pong (RFC 6455
  §5.5.3 allows it); `control_flood` frames over the budget fail the connection (1008).

The transport keeps no clock of its own: the engine passes `clock` (for the control-frame budget)
and enforces the deadlines (accept → upgrade, upgrade → hello) from its housekeeping.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, cast
from typing import Protocol as TypingProtocol

from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask

from netcode.ws_frames import (
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    close_payload,
    frame_header,
    parse_close,
    server_frame,
    valid_close_code,
)

log = logging.getLogger("arbiter.ws")
# websockets logs every opened connection at INFO; at a thousand clients that is noise.
log.setLevel(logging.WARNING)

# The phases a connection goes through (`WsServerConnection.phase`).
PHASE_HTTP: Final = "http"  # accepted, reading the HTTP request
PHASE_OPEN: Final = "open"  # upgraded: WebSocket frames
PHASE_CLOSING: Final = "closing"  # a close frame was sent, or the socket is being released

_HEAD_END: Final = b"\r\n\r\n"
_DIGITS: Final = re.compile(r"\d+")  # causes are aggregated without their numbers


@dataclass(frozen=True, slots=True)
class DoorLimits:
    """Per-connection bounds of the transport; defaults fit the game protocol (docs/security.md)."""

    max_size: int = 4096  # largest frame (the engine raises it to a hello's size)
    max_message: int = 4096  # largest reassembled message
    max_request_bytes: int = 8192  # HTTP request head (request line + headers)
    max_headers: int = 32
    pause_reading_at: int = 64 * 1024  # write backlog above which reading pauses
    max_backlog: int = 256 * 1024  # write backlog beyond which the connection is dropped
    control_rate: float = 10.0  # control frames (ping, pong) per second ...
    control_burst: float = 20.0  # ... with this much burst
    control_flood: int = 200  # control frames over the budget before the connection fails (1008)


# (status, content type, body[, extra headers]); a Cache-Control among the headers replaces the default.
HttpAnswer = tuple[int, str, bytes] | tuple[int, str, bytes, Sequence[tuple[str, str]]]


class ConnectionHandler(TypingProtocol):
    """What the application implements; every callback runs synchronously on the loop."""

    def on_connect(self, conn: WsServerConnection) -> bool:
        """A TCP connection was accepted; False refuses it (it is dropped at once)."""
        ...

    def http_request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> HttpAnswer | None:
        """Answer a plain HTTP request (`HttpAnswer`), or None to upgrade `path`. `headers` are the
        request's, names in lower case; `method` is GET or HEAD (the body of a HEAD answer is not sent)."""
        ...

    def on_open(self, conn: WsServerConnection) -> None: ...

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None: ...

    def on_close(self, conn: WsServerConnection) -> None:
        """The connection is gone; called once for every connection `on_connect` accepted."""
        ...

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        """Something went wrong on `conn` (a peer error or a bug, `exc` set for the latter); the
        connection is being closed. The handler logs it, rate-limited."""
        ...


class WsServerConnection(asyncio.Protocol):
    """One connection: the HTTP request, then a fast frame path.

    `handler` may be replaced after `on_open` (a host hands the connection to the campaign it
    joins); every later callback goes to the new one.

    After the 101 response the inbound frames are parsed inline: one whole masked binary frame
    with a 7-bit length (nearly every input) is checked and delivered without FrameReader; any
    other read goes through FrameReader, which enforces RFC 6455 and the size bounds.
    """

    __slots__ = (
        "_ctl_at",
        "_ctl_tokens",
        "_head",
        "_opened",
        "_pong_due",
        "_reader",
        "_sent_close",
        "_writing_paused",
        "accepted",
        "bytes_in",
        "bytes_out",
        "clock",
        "close_code",
        "control_over",
        "frame_error",
        "handler",
        "limits",
        "max_size",
        "msgs_in",
        "path",
        "peer",
        "phase",
        "session",
        "transport",
        "user",
    )

    def __init__(self, handler: ConnectionHandler, limits: DoorLimits, clock: Callable[[], float]) -> None:
        self.handler = handler
        self.limits = limits
        self.max_size = limits.max_size
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.phase = PHASE_HTTP
        self.accepted = False  # on_connect said yes: on_close is owed
        self._head = bytearray()
        self._reader: FrameReader | None = None
        self._opened = False
        self._sent_close = False
        self._writing_paused = False
        self._pong_due: bytes | None = None
        self._ctl_tokens = limits.control_burst
        self._ctl_at = 0.0
        self.control_over = 0  # control frames beyond the budget
        self.frame_error: int | None = None  # the close code the transport failed the connection with
        self.close_code: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.msgs_in = 0
        self.path = ""  # the request target of the upgrade (a host routes by it: /c/{campaign}/)
        # Slots for the application: its session object and whatever it keys players by.
        self.session: object = None
        self.user: object = None

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        t = self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        lim = self.limits
        t.set_write_buffer_limits(high=lim.pause_reading_at, low=lim.pause_reading_at // 4)
        self._ctl_at = self.clock()
        try:
            ok = self.handler.on_connect(self)
        except Exception as exc:
            self._bug("on_connect", exc)
            return
        self.accepted = ok
        if not ok:
            self.phase = PHASE_CLOSING
            t.abort()

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.bytes_in += n
        reader = self._reader
        if reader is not None:
            # Nearly all traffic: exactly one whole masked binary frame with a 7-bit length (0x82:
            # FIN, no RSV bit, binary), and nothing buffered from an earlier read.
            if n >= 6 and data[0] == 0x82 and not reader.pending:
                size = data[1] - 0x80  # negative when the mask bit is missing
                if 0 <= size < 126 and n == size + 6 and size <= self.max_size and not self._sent_close:
                    self.msgs_in += 1
                    try:
                        self.handler.on_message(self, apply_mask(data[6:], data[2:6]), False)
                    except Exception as exc:
                        self._bug("on_message", exc)
                    return
            try:
                self._frames(reader, data)
            except Exception as exc:
                self._bug("frames", exc)
            return
        if self.phase is not PHASE_HTTP:
            return  # after an HTTP answer (or a refusal) further bytes are ignored
        try:
            self._http(data)
        except Exception as exc:
            self._bug("http", exc)

    def eof_received(self) -> bool | None:
        return None  # close our side too (asyncio then calls connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = PHASE_CLOSING
        self._opened = False
        if self.accepted:
            self.accepted = False
            try:
                self.handler.on_close(self)
            except Exception as err:
                self._bug("on_close", err)

    def pause_writing(self) -> None:
        # The peer does not read what we write: stop reading what it writes.
        self._writing_paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        t = self.transport
        if t is None or t.is_closing():
            return
        t.resume_reading()
        self._flush_pong()

    # -- HTTP -------------------------------------------------------------------------------------
    def _http(self, data: bytes) -> None:
        head = self._head
        start = max(0, len(head) - 3)  # a trickled head is scanned once, not once per byte
        head += data
        lim = self.limits
        end = head.find(_HEAD_END, start)
        size = len(head) if end < 0 else end + 4
        if size > lim.max_request_bytes or head.count(b"\r\n", 0, size) > lim.max_headers + 1:
            self._http_answer(431, "text/plain", b"request header fields too large\n", cause="http: head too large")
            return
        if end < 0:
            return
        raw, rest = bytes(head[: end + 4]), bytes(head[end + 4 :])
        head.clear()
        proto = ServerProtocol(max_size=self.max_size, logger=log)
        proto.receive_data(raw)
        request = next((e for e in proto.events_received() if isinstance(e, Request)), None)
        if request is None:
            self._http_answer(400, "text/plain", b"bad request\n", cause="http: malformed request")
            return
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        method = request.method
        self.path = request.path
        answer = self.handler.http_request(request.path, headers, method)
        if answer is not None:
            extra = list(answer[3]) if len(answer) > 3 else []
            self._http_answer(answer[0], answer[1], answer[2], head_only=method == "HEAD", extra=extra)
            return
        response = proto.accept(request)
        if response.status_code != 101:
            body = bytes(response.body or b"")
            self._http_answer(response.status_code, "text/plain", body, cause="http: bad upgrade")
            return
        proto.send_response(response)
        for chunk in proto.data_to_send():
            self._write(chunk)
        self.phase = PHASE_OPEN
        self._opened = True
        self._reader = FrameReader(self.max_size, masked=True, max_message=self.limits.max_message)
        self.handler.on_open(self)
        if rest and self.is_open:
            self.data_received_frames(rest)

    def data_received_frames(self, data: bytes) -> None:
        """Frames pipelined behind the upgrade request, in the same read."""
        reader = self._reader
        if reader is not None:
            self._frames(reader, data)

    def _http_answer(
        self, status: int, ctype: str, body: bytes, cause: str = "", head_only: bool = False,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        """One HTTP response, then the socket is released (answers never keep the connection)."""
        if cause:
            self.handler.on_error(self, cause, None)
        reason = HTTPStatus(status).phrase if status in _STATUSES else "Error"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close"),
                   ("X-Content-Type-Options", "nosniff")]  # fmt: skip
        if not any(k.lower() == "cache-control" for k, _ in extra):
            headers.append(("Cache-Control", "no-store"))
        lines = "".join(f"{k}: {v}\r\n" for k, v in [*headers, *extra] if "\r" not in v and "\n" not in v)
        head = f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n"
        self.phase = PHASE_CLOSING
        t = self.transport
        if t is not None and not t.is_closing():
            # Not through _write's backlog bound: the handler sized this body, and it is the
            # connection's only answer (a replay's frames may be megabytes).
            data = head.encode("latin-1") + (b"" if head_only else body)
            self.bytes_out += len(data)
            t.write(data)
            t.close()  # asyncio flushes the write buffer first

    # -- frames -----------------------------------------------------------------------------------
    def _frames(self, reader: FrameReader, data: bytes) -> None:
        frames = reader.feed(data)
        handler = self.handler
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_TEXT):
                if self._sent_close:
                    continue  # RFC 6455 §1.4: after our close, data is discarded
                self.msgs_in += 1
                handler.on_message(self, payload, opcode == OP_TEXT)
            elif opcode == OP_CLOSE:
                self._peer_closed(payload)
                return
            elif self._control_budget():
                if opcode == OP_PING:
                    self._pong_due = payload
                    self._flush_pong()  # in order with the messages around it
                elif opcode == OP_PONG:
                    # A handler that pings to measure the round trip (the engine's lag
                    # compensation, engine/latency.py) gets the payload.
                    on_pong = getattr(handler, "on_pong", None)
                    if on_pong is not None:
                        on_pong(self, payload)
            elif opcode == OP_PING:
                self._pong_due = payload  # over the budget: only the newest ping will be answered
            if self.control_over > self.limits.control_flood:
                self._fail(CLOSE_POLICY, "control frame flood")
                return
        err = reader.error
        if err is not None and not self._sent_close:
            self._fail(err.code, str(err))

    def _control_budget(self) -> bool:
        """Take one control frame from the token bucket; False (and counted) when it is empty."""
        lim = self.limits
        now = self.clock()
        tokens = min(lim.control_burst, self._ctl_tokens + max(0.0, now - self._ctl_at) * lim.control_rate)
        self._ctl_at = now
        if tokens >= 1.0:
            self._ctl_tokens = tokens - 1.0
            return True
        self._ctl_tokens = tokens
        self.control_over += 1
        return False

    def _flush_pong(self) -> None:
        payload = self._pong_due
        if payload is None or self._writing_paused or self._sent_close:
            return
        self._pong_due = None
        self._write(frame_header(0xA, len(payload)) + payload)

    def _peer_closed(self, payload: bytes) -> None:
        """The peer's close frame (validated by FrameReader): answer it with its code, then release
        the socket; the server closes TCP first, as RFC 6455 §7.1.1 prefers."""
        code, _ = parse_close(payload)
        if not self._sent_close:
            self._sent_close = True
            self.close_code = code
            body = b"" if code == CLOSE_NO_STATUS else close_payload(code)
            self._write(server_frame(OP_CLOSE, body))
        self.phase = PHASE_CLOSING
        if self.transport is not None:
            self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): a close frame with `code`, then drop TCP."""
        self.frame_error = code  # the handler learns why in on_close (fair play: oversized frames)
        self.handler.on_error(self, f"ws {code}: {_DIGITS.sub('N', reason)}", None)
        self.close(code, reason[:100])
        if self.transport is not None:
            self.transport.close()

    def _bug(self, where: str, exc: BaseException) -> None:
        """An exception escaped a callback: report it once, drop the connection, keep the loop."""
        self.phase = PHASE_CLOSING
        try:
            self.handler.on_error(self, f"bug in {where}: {type(exc).__name__}", exc)
        finally:
            if self.transport is not None:
                self.transport.abort()

    # -- output -----------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() + len(data) > self.limits.max_backlog:
            self._overflow()
            return
        self.bytes_out += len(data)
        t.write(data)

    def _overflow(self) -> None:
        # A peer that lets this much pile up is not reading: no close frame could reach it either.
        self.phase = PHASE_CLOSING
        self.close_code = CLOSE_POLICY
        self.handler.on_error(self, "ws: write backlog over the bound", None)
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_open(self) -> bool:
        return self._opened and not self._sent_close and self.phase is PHASE_OPEN

    @property
    def write_buffer_size(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None else 0

    def send_parts(self, *parts: bytes, limit: int = 1 << 30) -> bool:
        """Write one binary message made of `parts`, unless the backlog is over `limit` bytes.

        Returns False (nothing written) when the connection is not open or is backlogged; a write
        that would pass `DoorLimits.max_backlog` drops the connection.
        """
        t = self.transport
        if t is None or not self.is_open or t.is_closing():
            return False
        if t.get_write_buffer_size() > limit:
            return False
        size = 0
        for p in parts:
            size += len(p)
        self._write(b"".join((frame_header(OP_BINARY, size), *parts)))
        return self.is_open

    def send(self, payload: bytes) -> bool:
        return self.send_parts(payload)

    def send_text(self, payload: str) -> bool:
        """A text message (the Autobahn echo harness; the game protocol is binary)."""
        if not self.is_open:
            return False
        self._write(server_frame(OP_TEXT, payload.encode("utf-8")))
        return self.is_open

    def send_framed(self, data: bytes) -> None:
        """Write bytes that already are whole server frames (e.g. `Replicator.encode_group(ws=True)`).

        The caller has just checked `is_open` and `write_buffer_size` (the snapshot sender does,
        before encoding), and nothing can change in between on the loop thread.
        """
        self._write(data)

    def ping(self, data: bytes = b"") -> None:
        if self.is_open:
            self._write(server_frame(OP_PING, data))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame (once) and release the socket once it is flushed.

        The peer's answering close frame is not waited for: a game client that is being closed has
        nothing more to say, and waiting would let a peer that never answers hold the socket.
        """
        if not valid_close_code(code):
            code = CLOSE_POLICY
        if self._opened and not self._sent_close:
            self._sent_close = True
            self.close_code = code
            self._write(server_frame(OP_CLOSE, close_payload(code, reason)))
        self.phase = PHASE_CLOSING
        if self.transport is not None and not self.transport.is_closing():
            # asyncio flushes the write buffer before closing the socket.
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once (a stalled reader will never answer a close frame)."""
        self.phase = PHASE_CLOSING
        if self.transport is not None:
            self.transport.abort()


_STATUSES: Final = frozenset(int(s) for s in HTTPStatus)


def connection_factory(
    handler: ConnectionHandler, limits: DoorLimits, clock: Callable[[], float]
) -> Callable[[], WsServerConnection]:
    def make() -> WsServerConnection:
        return WsServerConnection(handler, limits, clock)

    return make
