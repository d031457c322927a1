"""The door under attack, as an attacker runs it: real sockets against `arbiter serve`, honest bots
playing throughout (each must keep receiving its 20 snapshots a second), and afterwards: the
server's memory grew less than the documented bound (docs/security.md), it logged no traceback
and only rate-limited lines, and it caught no bug (`door_bugs`).

Attacks: ping flood, oversized pings, pre-upgrade trickle, silent sockets (before and after the
upgrade), oversized request heads, pipelined and mixed HTTP requests, per-address caps before the
upgrade, anonymous /stats. The account attacks (concurrent hellos with PostgreSQL, reconnect
position, one account filling slots) are in tests/test_door_accounts.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.inbound import UPGRADE
from engine.security.auth import KeyRing, TokenIssuer
from engine.tools.launcher import ServerProcess, start_server
from netcode.protocol import encode_hello
from netcode.ws_frames import OP_PING, client_frame
from tests.botutil import honest_bots

CAMPAIGN = "door"
# docs/security.md: what one hostile connection may cost the server, at most (user space), and the
# allowance for the allocator's and the interpreter's own noise in a measurement.
PER_CONNECTION_BOUND = 300 * 1024
NOISE = 24 * 2**20


@dataclass
class Door:
    server: ServerProcess
    issuer: TokenIssuer
    env: dict[str, str]

    @property
    def port(self) -> int:
        return self.server.port

    def rss(self) -> int:
        return int(psutil.Process(self.server.proc.pid).memory_info().rss)

    def full_stats(self) -> dict[str, Any]:
        return self.server.stats()

    def public_stats(self) -> dict[str, Any]:
        return self.server.http_json("/stats")


@contextlib.contextmanager
def door_server(tmp_path: Path, *args: str) -> Iterator[Door]:
    ring = KeyRing.generate()
    issuer = TokenIssuer(ring)
    server = start_server(
        ["--game", "wander", "--campaign", CAMPAIGN, "--data-dir", "", "--set", "npcs=50", *args], env=ring.to_env()
    )
    server.admin_token = issuer.issue("ops", CAMPAIGN, role="admin", ttl=600)
    try:
        yield Door(server, issuer, ring.to_env())
    finally:
        code = server.stop()
        assert code == 0, "\n".join(server.log[-40:])


async def with_honest_bots(door: Door, attack: Callable[[], Awaitable[None]], seconds: float = 4.0) -> None:
    """Run `attack` while 4 honest bots play; they must all stay connected at 19+ snapshots/s."""

    async def joined() -> bool:  # the bots are in before the attack starts
        return int((await asyncio.to_thread(door.public_stats))["ccu"]) >= 4

    async with honest_bots(door.server.url, "wander", 4, joined, seconds=seconds + 1.5, campaign=CAMPAIGN,
                           env=door.env):  # fmt: skip
        await attack()


def check_aftermath(door: Door, rss_before: int, rss_peak: int, hostile: int) -> None:
    assert rss_peak - rss_before <= hostile * PER_CONNECTION_BOUND + NOISE, (rss_before, rss_peak, hostile)
    stats = door.full_stats()
    assert stats["door_bugs"] == 0, stats["door_events"]
    log = door.server.log
    assert not [line for line in log if "Traceback" in line or "Exception in callback" in line], log[-40:]
    door_lines = [line for line in log if "arbiter.door" in line or "arbiter.ws" in line]
    # Rate-limited and aggregated: a handful of lines, whatever the number of attacks.
    assert len(door_lines) <= 40, door_lines[:50]


class RssWatch:
    """The server's peak RSS while an attack runs (sampled every 50 ms)."""

    def __init__(self, door: Door) -> None:
        self.door = door
        self.peak = door.rss()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.door.rss())
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> RssWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.door.rss())


@contextlib.asynccontextmanager
async def raw(port: int, rcvbuf: int | None = None) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw TCP connection to the server; with `rcvbuf`, one that barely reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def upgraded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(UPGRADE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the server has closed the connection (EOF or reset), reading whatever it sends."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


# -- the attacks ---------------------------------------------------------------------------------
async def test_ping_flood_of_sockets_that_never_read(tmp_path: Path) -> None:
    hostile = 20
    with door_server(tmp_path, "--hello-timeout", "30") as door:
        rss_before = door.rss()
        cut_off: list[bool] = []

        async def flood_one() -> None:
            async with raw(door.port, rcvbuf=4096) as (reader, writer):
                await upgraded(reader, writer)
                burst = client_frame(OP_PING, b"p" * 125) * 400  # 52 KB of pings per write
                with contextlib.suppress(ConnectionError):
                    for _ in range(200):  # ~10 MB per socket, as fast as the kernel takes it
                        writer.write(burst)
                        await asyncio.wait_for(writer.drain(), 2)
                        if writer.transport.is_closing():
                            break
                # Over the control-frame budget: failed with 1008 long before the hello deadline.
                cut_off.append(await closed_by_server(reader, 5))

        async def attack() -> None:
            await asyncio.gather(*(flood_one() for _ in range(hostile)))

        async with RssWatch(door) as watch:
            await with_honest_bots(door, attack)
        assert cut_off == [True] * hostile
        check_aftermath(door, rss_before, watch.peak, hostile)
        events = door.full_stats()["door_events"]
        assert events.get("ws 1008: control frame flood", 0) == hostile, events


async def test_oversized_pings_fail_at_once(tmp_path: Path) -> None:
    with door_server(tmp_path) as door:
        rss_before = door.rss()
        cut_off: list[bool] = []

        async def attack() -> None:
            for _ in range(10):
                async with raw(door.port, rcvbuf=4096) as (reader, writer):
                    await upgraded(reader, writer)
                    # RFC 6455 §5.5: a control frame carries at most 125 bytes; 4.6 KB is a protocol error.
                    writer.write(client_frame(OP_PING, b"p" * 4600) * 50)
                    cut_off.append(await closed_by_server(reader, 3))

        async with RssWatch(door) as watch:
            await with_honest_bots(door, attack)
        assert cut_off == [True] * 10
        check_aftermath(door, rss_before, watch.peak, 10)
        assert door.full_stats()["door_events"]["ws 1002: fragmented or oversized control frame"] == 10


async def test_trickled_and_silent_sockets_meet_their_deadlines(tmp_path: Path) -> None:
    hostile = 30
    with door_server(tmp_path, "--upgrade-timeout", "1.5", "--hello-timeout", "1.5") as door:
        rss_before = door.rss()
        outcomes: list[tuple[str, bool]] = []

        async def trickle() -> None:
            async with raw(door.port) as (reader, writer):
                writer.write(b"GET / HTTP/1.1\r\n")
                t0 = time.monotonic()
                with contextlib.suppress(ConnectionError):
                    while time.monotonic() - t0 < 6 and not reader.at_eof():
                        writer.write(b"X")  # one header byte at a time: never a complete request
                        await asyncio.sleep(0.2)
                        if reader.at_eof() or writer.transport.is_closing():
                            break
                outcomes.append(("trickle", await closed_by_server(reader, 3)))

        async def silent() -> None:
            async with raw(door.port) as (reader, _):
                outcomes.append(("silent", await closed_by_server(reader, 5)))

        async def silent_after_upgrade() -> None:
            async with raw(door.port) as (reader, writer):
                await upgraded(reader, writer)
                outcomes.append(("no hello", await closed_by_server(reader, 5)))

        async def attack() -> None:
            kinds = [trickle, silent, silent_after_upgrade]
            await asyncio.gather(*(kinds[i % 3]() for i in range(hostile)))
            phases = door.public_stats()["connection_phases"]
            assert phases["http"] <= 1 and phases["hello"] == 0, phases  # the /stats request itself

        async with RssWatch(door) as watch:
            await with_honest_bots(door, attack, seconds=8.0)
        assert len(outcomes) == hostile and all(ok for _, ok in outcomes), outcomes
        check_aftermath(door, rss_before, watch.peak, hostile)


async def test_pipelined_mixed_and_malformed_requests(tmp_path: Path) -> None:
    with door_server(tmp_path) as door:
        rss_before = door.rss()
        answers: dict[int, list[bytes]] = {}
        welcomed: list[bool] = []

        async def one(i: int, request: bytes) -> None:
            async with raw(door.port) as (reader, writer):
                writer.write(request)
                data = b""
                with contextlib.suppress(ConnectionError, TimeoutError):
                    async with asyncio.timeout(3):
                        while chunk := await reader.read(65536):
                            data += chunk
                answers.setdefault(i, []).append(data)

        async def upgrade_and_hello_in_one_write() -> None:
            async with raw(door.port) as (reader, writer):
                token = door.issuer.issue("pipeliner", CAMPAIGN, ttl=600)
                writer.write(UPGRADE + client_frame(0x2, encode_hello("pipeliner", token)))
                data = b""
                async with asyncio.timeout(5):
                    while b"welcome" not in data:
                        data += await reader.read(65536)
                welcomed.append(data.startswith(b"HTTP/1.1 101"))

        requests = [
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n" + UPGRADE,
            b"GET /nope HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n",
            b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 40 + b"\r\n",  # too many header lines
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",  # head over 8 KiB
            UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100 + b"\r\n\r\n",  # a TLS hello
        ]

        async def attack() -> None:
            for _ in range(40):  # 400 requests, as in the outside test
                await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
            await upgrade_and_hello_in_one_write()

        async with RssWatch(door) as watch:
            await with_honest_bots(door, attack, seconds=6.0)
        assert welcomed == [True]
        status = {i: {a.split(b"\r\n", 1)[0] for a in got} for i, got in answers.items()}
        # Each connection got one answer (the first request's), or a clean close; never two.
        assert all(a.count(b"HTTP/1.1 ") <= 1 for got in answers.values() for a in got)
        assert [len(answers[i]) for i in range(len(requests))] == [40] * len(requests)
        assert status[0] == status[1] == {b"HTTP/1.1 200 OK"}
        assert status[2] == {b"HTTP/1.1 404 Not Found"}
        assert status[3] == {b"HTTP/1.1 405 Method Not Allowed"}
        assert status[6] == status[7] == {b"HTTP/1.1 431 Request Header Fields Too Large"}
        assert status[8] == {b"HTTP/1.1 400 Bad Request"}  # websockets refuses a version other than 13
        assert status[5] <= {b"HTTP/1.1 400 Bad Request", b""} and status[9] <= {b"HTTP/1.1 400 Bad Request", b""}
        head = answers[4][0]
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # HEAD: no body
        check_aftermath(door, rss_before, watch.peak, 10)


async def test_per_address_caps_apply_before_the_upgrade(tmp_path: Path) -> None:
    args = ("--ip-limit-loopback", "--ip-max-unauth", "8", "--ip-conn-burst", "200", "--ip-conn-rate", "200")
    with door_server(tmp_path, *args) as door:
        rss_before = door.rss()
        got_in: list[bool] = []

        async def one() -> None:
            async with raw(door.port) as (reader, writer):
                writer.write(b"GET / HTTP/1.1\r\n")  # and never more
                got_in.append(not await closed_by_server(reader, 0.5))

        async def attack() -> None:
            await asyncio.gather(*(one() for _ in range(60)))

        async with RssWatch(door) as watch:
            await with_honest_bots(door, attack)
        # Honest bots were playing (not counted); at most 8 of the 60 silent ones were let in.
        assert 1 <= sum(got_in) <= 8, got_in
        check_aftermath(door, rss_before, watch.peak, 8)
        assert door.full_stats()["refused_connections"] >= 52


def _get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, Any] | bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def test_anonymous_stats_tell_no_secrets(tmp_path: Path) -> None:
    with door_server(tmp_path) as door:

        async def attack() -> None:
            status, public = await asyncio.to_thread(_get, door.port, "/stats")
            assert status == 200 and isinstance(public, dict)
            for secret in ("fairplay", "pid", "rss_mb", "cpu_s", "pg", "door_events", "protocol_errors",
                           "auth_refusals", "inputs_refused"):  # fmt: skip
                assert secret not in public
            assert public["ccu"] == 4 and public["connection_phases"]["playing"] == 4
            assert (await asyncio.to_thread(_get, door.port, "/stats/full"))[0] == 401
            player = door.issuer.issue("someone", CAMPAIGN, ttl=600)
            assert (await asyncio.to_thread(_get, door.port, "/stats/full", player))[0] == 403
            status, full = await asyncio.to_thread(_get, door.port, "/stats/full", door.server.admin_token)
            assert status == 200 and isinstance(full, dict) and "fairplay" in full and "rss_mb" in full

        await with_honest_bots(door, attack, seconds=3.0)
