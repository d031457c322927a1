"""Inbound cost per input, and whether the frame parser stays hand-written.

    python -m bench.inbound [--json] [--clients 1000] [--inputs 200000]

Rows (µs per input, best of `--repeat` runs; the machine is shared, expect ±15 %):
- `server`: one whole masked input frame (what a wander bot sends 20 times a second, with its
  snapshot ack) through `WsServerConnection.data_received` → `GameServer.on_message` →
  `ServerSession.receive` → `Campaign.submit`, round-robin over `--clients` admitted connections
  with fake transports (no socket: the kernel's ~7 µs per read is not in it). The input buffer is
  cleared every `--clients` inputs, as a tick would.
- `parse_fast`: the transport's inline check of a single whole frame, plus unmasking.
- `parse_reader`: `FrameReader.feed` (every RFC 6455 check) on the same frame.
- `parse_websockets`: websockets' Sans-I/O parser on the same frame (`receive_data` +
  `events_received` of an OPEN `ServerProtocol`): what calling the library would cost instead.
- `parse_reader_fragments`: a 3-fragment text message with a ping between (the rare path).

It runs against any checkout (PYTHONPATH=... python -m bench.inbound), so the figures before the
door hardening are measured by the same code. `--json` writes bench/results/inbound.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask

from engine.config import ServerConfig
from engine.server import GameServer
from netcode import ws_server
from netcode.protocol import encode_hello, encode_input
from netcode.ws_frames import OP_BINARY, OP_CONT, OP_PING, FrameReader, client_frame

RESULTS = Path(__file__).resolve().parent / "results" / "inbound.json"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class FakeTransport:
    """Enough of an asyncio transport for a connection that is never backlogged; `out` keeps what
    was written (tests/test_ws_fast_paths.py reads it)."""

    def __init__(self, n: int) -> None:
        # One address each: the door's per-address caps (docs/security.md) are not what is measured.
        self.peer = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 10000 + n % 50000)
        self.closing = False
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def close(self) -> None:
        self.closing = True

    abort = close

    def can_write_eof(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connection(handler: Any, clock: Callable[[], float]) -> Any:
    limits_cls = getattr(ws_server, "DoorLimits", None)
    if limits_cls is not None:  # after the door hardening
        return ws_server.WsServerConnection(handler, limits_cls(max_size=4096, max_message=4096), clock)
    return ws_server.WsServerConnection(handler, 4096)  # type: ignore[arg-type, call-arg]  # before


def _server_reader() -> FrameReader:
    if "masked" in FrameReader.__slots__:
        return FrameReader(4096, masked=True)
    return FrameReader(4096, require_mask=True)  # type: ignore[call-arg]  # before the door hardening


def _best(fn: Callable[[], None], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


async def bench_server(clients: int, inputs: int, repeat: int) -> float:
    # The session's rate limit is lifted: here inputs arrive far faster than a client may send
    # them, and the refused path (cheaper) is not the one measured.
    cfg = ServerConfig(game="wander", data_dir="", port=0, game_config={"npcs": 100}, input_rate=1e12, input_burst=1e12)
    server = GameServer(cfg)
    loop = asyncio.get_running_loop()
    if hasattr(server, "host"):  # since hosting: connections open at the host's front, like a real one's
        await server.start()
        handler: Any = server.host.front  # type: ignore[union-attr]
    else:
        server._loop, handler = loop, server
        for attr in ("accepting", "_accepting"):
            setattr(server, attr, True)
    conns = []
    for i in range(clients):
        conn = _connection(handler, loop.time)
        conn.connection_made(FakeTransport(i))
        conn.data_received(UPGRADE)
        conn.data_received(client_frame(OP_BINARY, encode_hello(f"p{i}")))
        conns.append(conn)
    assert len(server.by_eid) == clients, "not every bench client was admitted"
    move = {"dx": 0.5, "dy": -0.25}
    frames = [client_frame(OP_BINARY, encode_input(k // clients + 1, 0, move, 900)) for k in range(inputs)]
    batch = server.campaign.inputs

    taken = [0]

    def run() -> None:
        for k in range(inputs):
            conns[k % clients].data_received(frames[k])
            if k % clients == clients - 1:
                taken[0] += batch.n
                batch.clear()
        taken[0] += batch.n
        batch.clear()

    per_input = _best(run, inputs, repeat)
    # Every input reached the campaign's batch in every run: the bench measured the whole path.
    assert taken[0] == inputs * repeat, f"{taken[0]} of {inputs * repeat} inputs reached the campaign"
    offences = sum(c.session.offences for c in server.clients.values())
    assert offences == 0, f"{offences} offences: the bench measured the refusal path"
    if hasattr(server, "host"):
        server.request_stop()
        await server.run()
    return per_input


def bench_parsers(inputs: int, repeat: int) -> dict[str, float]:
    frame = client_frame(OP_BINARY, encode_input(7, 3, {"dx": 0.5, "dy": -0.25}, 900))

    def fast() -> None:
        for _ in range(inputs):
            data = frame
            n = len(data)
            if n >= 6 and data[0] == 0x82:
                size = data[1] - 0x80
                if 0 <= size < 126 and n == size + 6:
                    apply_mask(data[6:], data[2:6])

    def reader() -> None:
        r = _server_reader()
        for _ in range(inputs):
            r.feed(frame)

    proto = ServerProtocol(max_size=4096)
    proto.receive_data(UPGRADE)
    (request,) = proto.events_received()
    proto.send_response(proto.accept(request))  # type: ignore[arg-type]
    assert proto.state is State.OPEN  # only the frame parser runs below

    def websockets_parser() -> None:
        for _ in range(inputs):
            proto.receive_data(frame)
            for ev in proto.events_received():
                assert isinstance(ev, Frame) and ev.opcode is Opcode.BINARY

    text = "fragmented κόσμε message ".encode()
    frag = (
        client_frame(0x1, text)[:1].replace(b"\x81", b"\x01") + client_frame(0x1, text)[1:]  # FIN clear
        + client_frame(OP_PING, b"p")
        + bytes((0x00,)) + client_frame(OP_CONT, text)[1:]
        + bytes((0x80,)) + client_frame(OP_CONT, text)[1:]
    )  # fmt: skip

    def fragments() -> None:
        r = _server_reader()
        for _ in range(inputs // 10):
            r.feed(frag)

    return {
        "parse_fast": _best(fast, inputs, repeat),
        "parse_reader": _best(reader, inputs, repeat),
        "parse_websockets": _best(websockets_parser, inputs, repeat),
        "parse_reader_fragments": _best(fragments, inputs // 10, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--inputs", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = {"server": asyncio.run(bench_server(args.clients, args.inputs, args.repeat))}
    rows.update(bench_parsers(args.inputs, args.repeat))
    rows = {k: round(v, 3) for k, v in rows.items()}
    for k, v in rows.items():
        print(f"{k:>24}: {v:7.3f} µs per input")
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
