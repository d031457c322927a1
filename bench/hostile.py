"""Memory one hostile connection costs the server, held at its bound (docs/security.md).

    python -m bench.hostile [--json] [--conns 300]

Starts `arbiter serve` (wander, deadlines stretched so nothing is dropped while it measures),
then opens `--conns` connections of one kind at a time, each pushed to the bound of its phase,
and reports the server's RSS growth per connection (the kernel's socket buffers are not in RSS):
- `idle`: connected, sends nothing (the floor: transport, protocol and bookkeeping objects);
- `http_head`: an HTTP request head one byte short of `max_request_bytes`, never finished;
- `partial_frame`: upgraded, then a hello frame one byte short of its announced `max_size`;
- `ping_flood`: upgraded, never reads, floods 125-byte pings until the server cuts it (1008);
  the figure is the peak while they flood.
`--json` writes bench/results/hostile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from bench.inbound import UPGRADE
from engine.tools.launcher import ServerProcess, start_server
from netcode.protocol import MAX_HELLO_FRAME
from netcode.ws_frames import OP_BINARY, OP_PING, client_frame, frame_header

RESULTS = Path(__file__).resolve().parent / "results" / "hostile.json"
MAX_REQUEST_BYTES = 8192


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def _upgraded(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _open(port)
    writer.write(UPGRADE)
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def idle(port: int) -> asyncio.StreamWriter:
    return (await _open(port))[1]


async def http_head(port: int) -> asyncio.StreamWriter:
    _, writer = await _open(port)
    head = b"GET / HTTP/1.1\r\nX-Pad: "
    writer.write(head + b"a" * (MAX_REQUEST_BYTES - 1 - len(head)))
    await writer.drain()
    return writer


async def partial_frame(port: int) -> asyncio.StreamWriter:
    _, writer = await _upgraded(port)
    n = MAX_HELLO_FRAME
    writer.write(frame_header(OP_BINARY, n, masked=True) + b"\x00" * 4 + b"\x00" * (n - 1))
    await writer.drain()
    return writer


async def ping_flood(port: int) -> asyncio.StreamWriter:
    _, writer = await _upgraded(port)
    burst = client_frame(OP_PING, b"p" * 125) * 200
    with contextlib.suppress(ConnectionError):
        for _ in range(50):
            writer.write(burst)
            await asyncio.sleep(0)
    return writer


Kind = Callable[[int], Awaitable[asyncio.StreamWriter]]


async def measure(server: ServerProcess, kind: Kind, n: int) -> dict[str, float]:
    proc = psutil.Process(server.proc.pid)
    await asyncio.sleep(0.5)
    before = proc.memory_info().rss
    peak = before
    writers = []
    for _ in range(n):
        writers.append(await kind(server.port))
        peak = max(peak, proc.memory_info().rss)
    await asyncio.sleep(0.5)
    held = proc.memory_info().rss
    peak = max(peak, held)
    phases = server.http_json("/stats")["connection_phases"]
    for w in writers:
        w.transport.abort()
    await asyncio.sleep(0.5)
    return {
        "conns": n,
        "held_kib_per_conn": round((held - before) / n / 1024, 1),
        "peak_kib_per_conn": round((peak - before) / n / 1024, 1),
        "server_saw": phases["http"] + phases["hello"],
    }


async def run(n: int) -> dict[str, dict[str, float]]:
    rows = {}
    for name, kind in (("idle", idle), ("http_head", http_head), ("partial_frame", partial_frame),
                       ("ping_flood", ping_flood)):  # fmt: skip
        # A fresh server per kind: memory freed by the previous kind would be reused, unseen by RSS.
        server = await asyncio.to_thread(
            start_server,
            [
                *("--game", "wander", "--data-dir", "", "--set", "npcs=100", "--upgrade-timeout", "120"),
                *("--hello-timeout", "120", "--max-unauth", str(4 * n), "--max-connections", str(4 * n)),
            ],
        )
        try:
            rows[name] = await measure(server, kind, n)
        finally:
            server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--conns", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # the flooding sockets' own send errors
    rows = asyncio.run(run(args.conns))
    for name, r in rows.items():
        print(f"{name:>14}: {r['held_kib_per_conn']:7.1f} KiB held, {r['peak_kib_per_conn']:7.1f} KiB peak per "
              f"connection ({r['conns']} opened, {r['server_saw']} still open at the server)")  # fmt: skip
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
