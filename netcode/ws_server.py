"""WebSocket server transport: an asyncio Protocol driving websockets' Sans-I/O `ServerProtocol`.

Why not `websockets.asyncio.server`: its per-connection reader task costs 15-17 µs per inbound
message and its `send()` awaits the socket (a stalled reader froze the whole tick in the probe).
Here a message costs no task wake-up: bytes go straight from `data_received` to the handler, and
`send_parts()` is a synchronous write that refuses (returns False) when the client's kernel and
user-space buffers are already over a bound, so the caller can drop a superseded snapshot instead
of queueing without limit.

The transport owns no clock and starts no task; the engine decides about time-outs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol as TypingProtocol
from typing import cast

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask

from netcode.ws_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameReader,
    close_payload,
    frame_header,
    server_frame,
)

log = logging.getLogger("arbiter.ws")
# websockets logs every opened connection at INFO; at a thousand clients that is noise.
log.setLevel(logging.WARNING)


HttpAnswer = tuple[int, str, bytes] | tuple[int, str, bytes, Sequence[tuple[str, str]]]


class ConnectionHandler(TypingProtocol):
    """What the application implements; every callback runs synchronously on the loop."""

    def http_request(self, path: str) -> HttpAnswer | None:
        """Answer a plain HTTP GET (status, content type, body[, headers]), or None to upgrade `path`.
        The optional headers (name, value) are added, a Cache-Control among them replacing the default."""
        ...

    def on_open(self, conn: WsServerConnection) -> None: ...

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None: ...

    def on_close(self, conn: WsServerConnection) -> None: ...


class WsServerConnection(asyncio.Protocol):
    """One connection: websockets' `ServerProtocol` for the HTTP upgrade, then a fast frame path.

    After the 101 response the inbound frames are parsed by `FrameReader` (masked client frames,
    size checked on the header) instead of websockets' generator-based parser, which cost ~24 µs
    per input frame in the profile of 1000 clients; control frames (ping, close) are answered here.
    """

    __slots__ = (
        "_closing",
        "_fast",
        "_opened",
        "_proto",
        "_sent_close",
        "bytes_in",
        "bytes_out",
        "close_code",
        "frame_error",
        "handler",
        "max_size",
        "msgs_in",
        "peer",
        "session",
        "transport",
        "user",
    )

    def __init__(self, handler: ConnectionHandler, max_size: int) -> None:
        self.handler = handler
        self.max_size = max_size
        self._proto: ServerProtocol | None = ServerProtocol(max_size=max_size, logger=log)
        self._fast: FrameReader | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.frame_error: int | None = None
        self._opened = False
        self._closing = False
        self._sent_close = False
        self.close_code: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.msgs_in = 0
        # Slots for the application: its session object and whatever it keys players by.
        self.session: object = None
        self.user: object = None

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.bytes_in += n
        fast = self._fast
        if fast is not None:
            # Nearly all traffic: exactly one whole masked binary frame with a 7-bit length, and
            # nothing buffered from an earlier read. Anything else takes FrameReader's full path.
            if n >= 6 and data[0] == 0x82 and not fast.pending:
                size = data[1] - 0x80  # negative when the mask bit is missing
                if 0 <= size < 126 and n == size + 6 and size <= self.max_size:
                    if not (self._closing or self._sent_close):
                        self.msgs_in += 1
                        self.handler.on_message(self, apply_mask(data[6:], data[2:6]), False)
                    return
            self._fast_frames(fast, data)
            return
        proto = self._proto
        assert proto is not None
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                op = event.opcode
                if op is Opcode.BINARY or op is Opcode.TEXT:
                    if not event.fin:
                        # Inputs are tiny; a fragmented one is a client bug or an attack.
                        proto.fail(1003, "fragmented messages are not supported")
                        break
                    self.msgs_in += 1
                    self.handler.on_message(self, bytes(event.data), op is Opcode.TEXT)
                elif op is Opcode.CONT:
                    proto.fail(1003, "fragmented messages are not supported")
                    break
            elif isinstance(event, Request):
                self._handshake(event)
        self._flush_proto()
        # Switch to the fast path once websockets holds no partial frame of ours.
        if self._opened and proto.state is State.OPEN and not proto.reader.buffer:
            self._fast = FrameReader(self.max_size, require_mask=True, allow_fragments=False)
            self._proto = None

    def _fast_frames(self, fast: FrameReader, data: bytes) -> None:
        try:
            frames = fast.feed(data)
        except FrameError as exc:
            self.frame_error = exc.code  # the handler learns why in on_close (fair play: oversized frames)
            self.close(exc.code, str(exc)[:100])
            return
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_TEXT):
                if self._closing or self._sent_close:
                    return  # RFC 6455: after a close, further data is discarded
                self.msgs_in += 1
                self.handler.on_message(self, payload, opcode == OP_TEXT)
            elif opcode == OP_PING:
                self._write(server_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                if not self._sent_close:
                    self._sent_close = True
                    self._write(server_frame(OP_CLOSE, close_payload(code if code not in (1005, 1006) else 1000)))
                if self.transport is not None:
                    self.transport.close()
                return
            # OP_PONG: nothing to do; any byte from the client already counts as liveness.

    def eof_received(self) -> bool | None:
        if self._proto is not None:
            self._proto.receive_eof()
            self._flush_proto()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._opened:
            self._opened = False
            self.handler.on_close(self)

    # -- handshake --------------------------------------------------------------------------------
    def _handshake(self, request: Request) -> None:
        proto = self._proto
        assert proto is not None
        answer = self.handler.http_request(request.path)
        if answer is not None:
            status, ctype, body = answer[:3]
            extra = list(answer[3]) if len(answer) > 3 else []
            response = proto.reject(status, "")
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")]
            if not any(k.lower() == "cache-control" for k, _ in extra):
                headers.append(("Cache-Control", "no-store"))
            response = Response(response.status_code, response.reason_phrase, Headers(headers + extra), body)
            proto.send_response(response)
            return
        response = proto.accept(request)
        proto.send_response(response)
        if response.status_code == 101:
            self._opened = True
            # The 101 goes out first: the handler may write frames (or refuse) from on_open, and
            # frames written straight to the transport must not overtake the upgrade response.
            self._flush_proto()
            self.handler.on_open(self)

    # -- output -----------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            self.bytes_out += len(data)
            t.write(data)

    def _flush_proto(self) -> None:
        transport = self.transport
        proto = self._proto
        if transport is None or proto is None:
            return
        for data in proto.data_to_send():
            if data:
                self._write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        done = proto.state is State.CLOSED or (proto.close_expected() and proto.state is not State.OPEN)
        if done and not transport.is_closing():
            # The closing handshake is done (or we failed the connection): release the socket.
            transport.close()

    @property
    def is_open(self) -> bool:
        return self._opened and not self._closing and not self._sent_close

    @property
    def write_buffer_size(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None else 0

    def send_parts(self, *parts: bytes, limit: int = 1 << 30) -> bool:
        """Write one binary message made of `parts`, unless the backlog is over `limit` bytes.

        Returns False (nothing written) when the connection is not open or is backlogged.
        """
        t = self.transport
        if t is None or not self.is_open or t.is_closing():
            return False
        if t.get_write_buffer_size() > limit:
            return False
        size = 0
        for p in parts:
            size += len(p)
        data = b"".join((frame_header(OP_BINARY, size), *parts))
        self.bytes_out += len(data)
        t.write(data)
        return True

    def send(self, payload: bytes) -> bool:
        return self.send_parts(payload)

    def send_framed(self, data: bytes) -> None:
        """Write bytes that already are whole server frames (e.g. `Replicator.encode_group(ws=True)`).

        No checks: the caller has just checked `is_open` and `write_buffer_size` (the snapshot
        sender does, before encoding), and nothing can change in between on the loop thread.
        """
        self.bytes_out += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def ping(self, data: bytes = b"") -> None:
        if self.is_open:
            self._write(server_frame(OP_PING, data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and release the socket once it is flushed."""
        if self._proto is not None and self._proto.state is State.OPEN:
            self._proto.send_close(code, reason)
            self._sent_close = True
            self.close_code = code
            self._flush_proto()
            return
        if self._opened and not self._sent_close:
            self._sent_close = True
            self.close_code = code
            self._write(server_frame(OP_CLOSE, close_payload(code, reason)))
        if self.transport is not None and not self.transport.is_closing():
            # asyncio flushes the write buffer before closing the socket.
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once (a stalled reader will never answer a close frame)."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()


def connection_factory(handler: ConnectionHandler, max_size: int) -> Callable[[], WsServerConnection]:
    def make() -> WsServerConnection:
        return WsServerConnection(handler, max_size)

    return make
