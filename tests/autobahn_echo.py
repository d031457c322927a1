"""Echo servers for the Autobahn|Testsuite run (tests/test_autobahn.py), used by nothing else.

`python -m tests.autobahn_echo arbiter` serves Arbiter's transport (netcode/ws_server.py) in an
echo mode: text back as text, binary as binary, with the limits raised to what section 9 sends
(16 MiB messages). `python -m tests.autobahn_echo websockets` serves the `websockets` library's own
asyncio server, the reference figures. Both print `PORT <n>` once they listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

import uvloop

from netcode.ws_server import DoorLimits, WsServerConnection, connection_factory

BIG = 16 * 2**20 + 1024  # section 9's largest message is 16 MiB

ECHO_LIMITS = DoorLimits(max_size=BIG, max_message=BIG, max_request_bytes=8192, max_backlog=4 * BIG)


class EchoHandler:
    """ConnectionHandler that echoes every message; Autobahn checks the framing around it."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}

    def on_connect(self, conn: WsServerConnection) -> bool:
        return True

    def http_request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, str, bytes] | None:
        return None

    def on_open(self, conn: WsServerConnection) -> None:
        pass

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None:
        if is_text:
            conn.send_text(payload.decode("utf-8"))  # FrameReader has checked it is UTF-8
        else:
            conn.send_parts(payload)

    def on_close(self, conn: WsServerConnection) -> None:
        pass

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        self.errors[cause] = self.errors.get(cause, 0) + 1
        if exc is not None:  # a bug, not a peer error: make it visible in the test's output
            print(f"BUG {cause}: {exc!r}", file=sys.stderr, flush=True)


async def serve_arbiter() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(connection_factory(EchoHandler(), ECHO_LIMITS, loop.time), "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


async def serve_websockets() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, max_size=BIG, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "arbiter"
    uvloop.run(serve_arbiter() if which == "arbiter" else serve_websockets())
