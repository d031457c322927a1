"""WebSocket client transport: an asyncio Protocol with a minimal RFC 6455 client.

Bots drive a thousand of these from one process, so a received message must cost a few
microseconds: no task per connection, no per-frame objects, server frames (unmasked) parsed by
`FrameReader`. The opening handshake is checked like any client checks it (101 status and the
`Sec-WebSocket-Accept` digest of our key). Browser and third-party clients need none of this: the
server speaks plain RFC 6455.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from websockets.utils import accept_key, generate_key

from netcode.ws_frames import (
    CLOSE_NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    client_frame,
    close_payload,
    parse_close,
)

MessageCallback = Callable[[bytes], None]
CloseCallback = Callable[[int, str], None]


class HandshakeError(ConnectionError):
    pass


class WsClientConnection(asyncio.Protocol):
    def __init__(
        self,
        host: str,
        path: str,
        on_message: MessageCallback,
        on_close: CloseCallback | None = None,
        max_size: int = 1 << 24,
    ) -> None:
        self._host = host
        self._path = path
        self._key = generate_key()
        self._on_message = on_message
        self._on_close = on_close
        self._reader = FrameReader(max_size)
        self._http = bytearray()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.close_code = 0
        self.close_reason = ""
        self.bytes_in = 0
        self.msgs_in = 0
        self._open = False  # the handshake is done (frames follow)

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        request = (
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.bytes_in += n
        reader = self._reader
        if n >= 2 and data[0] == 0x82 and self._open and not reader.pending:
            # Nearly all traffic: exactly one whole binary frame (unmasked, 7- or 16-bit length).
            size = data[1]  # 0x82: FIN, no RSV bit, binary; a set mask bit (>= 128) is not taken here
            hdr = 2
            if size == 126 and n >= 4:
                size = (data[2] << 8) | data[3]
                hdr = 4
            elif size > 126:
                size = -1
            if 0 <= size < 0x10000 and n == hdr + size and size <= reader.max_size:
                self.msgs_in += 1
                cut = reader.truncate_at
                if cut is not None and size > reader.truncate_over:
                    self._on_message(data[hdr : hdr + cut])
                else:
                    self._on_message(data[hdr:] if hdr else data)
                return
        if not self.opened.done():
            self._http += data
            end = self._http.find(b"\r\n\r\n")
            if end < 0:
                if len(self._http) > 16384:
                    self._fail_handshake("response headers too long")
                return
            head = bytes(self._http[:end]).decode("latin-1")
            rest = bytes(self._http[end + 4 :])
            self._http.clear()
            lines = head.split("\r\n")
            status = lines[0].split(" ", 2)
            if len(status) < 2 or status[1] != "101":
                self._fail_handshake(f"server answered {lines[0]!r}")
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            if headers.get("sec-websocket-accept") != accept_key(self._key):
                self._fail_handshake("bad Sec-WebSocket-Accept")
                return
            self.opened.set_result(None)
            self._open = True
            if not rest:
                return
            data = rest
        reader = self._reader
        for opcode, payload in reader.feed(data):
            if opcode in (OP_BINARY, OP_TEXT):
                self.msgs_in += 1
                self._on_message(payload)
            elif opcode == OP_PING:
                self._write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code, reason = parse_close(payload)  # FrameReader has validated it
                self._record_close(code, reason)
                self._write(client_frame(OP_CLOSE, b"" if code == CLOSE_NO_STATUS else close_payload(code)))
                if self.transport is not None:
                    self.transport.close()
                return
        err = reader.error
        if err is not None:
            self._send_close(err.code, str(err)[:100])
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(str(exc) if exc else "connection closed"))
        self._record_close(1006 if not self.close_code else self.close_code, self.close_reason)

    # -- helpers ----------------------------------------------------------------------------------
    def _record_close(self, code: int, reason: str) -> None:
        if not self.close_code:
            self.close_code = code
            self.close_reason = reason
        if not self.closed.done():
            self.closed.set_result((self.close_code, self.close_reason))
            if self._on_close is not None:
                self._on_close(self.close_code, self.close_reason)

    def _fail_handshake(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(why))
        self.abort()

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _send_close(self, code: int, reason: str) -> None:
        self._write(client_frame(OP_CLOSE, close_payload(code, reason)))

    # -- API --------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        t = self.transport
        return self.opened.done() and not self.closed.done() and t is not None and not t.is_closing()

    def count_only(self, prefix: int, over: int = 4096) -> None:
        """From now on deliver data messages over `over` bytes truncated to their first `prefix` bytes."""
        self._reader.truncate_at = prefix
        self._reader.truncate_over = over

    def send(self, payload: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(client_frame(OP_BINARY, payload))

    def send_text(self, payload: bytes) -> None:
        self._write(client_frame(OP_TEXT, payload))

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use it to send malformed frames)."""
        self._write(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.is_open:
            self._send_close(code, reason)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def ws_connect(
    url: str,
    on_message: MessageCallback,
    on_close: CloseCallback | None = None,
    *,
    timeout: float = 10.0,
    rcvbuf: int | None = None,
    max_size: int = 1 << 24,
) -> WsClientConnection:
    """Open a WebSocket to `url` (ws://host:port/path) and wait for the handshake."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError("only ws:// URLs are supported by the built-in client")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    loop = asyncio.get_running_loop()

    sock = None
    if rcvbuf is not None:
        import socket

        # A small receive buffer must be set before connect() to bound the TCP window.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)

    def factory() -> WsClientConnection:
        return WsClientConnection(f"{host}:{port}", path, on_message, on_close, max_size)

    if sock is not None:
        _, conn = await loop.create_connection(factory, sock=sock)
    else:
        _, conn = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    await asyncio.wait_for(conn.opened, timeout)
    return conn
