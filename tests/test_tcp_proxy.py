"""The test proxy's latency mode: delay bounds, exact byte streams, stalls, cut/restore, backpressure.

Everything runs in one event loop on 127.0.0.1, so both ends of a measurement share one clock
(`time.perf_counter`): a message carries its send time and the receiver subtracts."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tests.tcp_proxy import CHUNK, DelayProfile, DirectionStats, TcpProxy, _Direction

MSG = struct.Struct("!Qd")  # sequence number, perf_counter() at send
# What the event loop may add to a delay: timer rounding (uvloop has 1 ms timers) on the low side,
# and a busy CI box on the high side.
EARLY_SLACK = 0.003

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def proxied(handler: Handler, **options: object) -> AsyncIterator[TcpProxy]:
    async with serve(handler) as port:
        proxy = await TcpProxy("127.0.0.1", port, **options).start()  # type: ignore[arg-type]
        try:
            yield proxy
        finally:
            await proxy.close()


async def poll(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def messages(buf: bytearray) -> Iterator[tuple[int, float]]:
    """Pop every complete message off the front of `buf`."""
    whole = len(buf) - len(buf) % MSG.size
    yield from MSG.iter_unpack(bytes(buf[:whole]))
    del buf[:whole]


@dataclass
class StampServer:
    """Records the one-way delay of every message it receives and how many came in one read; with
    `reply`, answers each with its own sequence number and a fresh send time."""

    reply: bool = True
    up_delays: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    per_read: list[int] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        try:
            while data := await reader.read(CHUNK):
                now = time.perf_counter()
                buf += data
                got = 0
                for seq, sent in messages(buf):
                    got += 1
                    self.up_delays.append(now - sent)
                    self.seqs.append(seq)
                    if self.reply:
                        writer.write(MSG.pack(seq, time.perf_counter()))
                self.per_read.append(got)
                await writer.drain()
        finally:
            writer.close()


async def stream_messages(proxy: TcpProxy, count: int, gap: float) -> tuple[list[float], list[int]]:
    """Send `count` stamped messages `gap` apart through the proxy; return the downstream delays and
    sequence numbers of the replies (none when the server does not reply)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    down_delays: list[float] = []
    seqs: list[int] = []

    async def receive() -> None:
        buf = bytearray()
        while data := await reader.read(CHUNK):
            now = time.perf_counter()
            buf += data
            for seq, sent in messages(buf):
                down_delays.append(now - sent)
                seqs.append(seq)

    receiver = asyncio.create_task(receive())
    for seq in range(count):
        writer.write(MSG.pack(seq, time.perf_counter()))
        await asyncio.sleep(gap)  # pacing the traffic, not waiting for anything
    writer.write_eof()
    await asyncio.wait_for(receiver, 5)  # the half-close comes back once every reply is through
    writer.close()
    return down_delays, seqs


# ------------------------------------------------------------------------------------------ delays


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


def due_times(profile: DelayProfile, seed: str, arrivals: list[float]) -> tuple[list[float], DirectionStats]:
    clock = FakeClock()
    stats = DirectionStats()
    direction = _Direction(profile, random.Random(seed), stats, 1 << 20, clock)  # type: ignore[arg-type]
    dues = []
    for t in arrivals:
        clock.now = t
        dues.append(direction._due(t))
    return dues, stats


def test_due_times_are_seeded_in_order_and_bounded() -> None:
    latency, jitter, every, extra = 0.15, 0.05, (3.0, 6.0), (0.15, 0.35)
    profile = DelayProfile(latency, jitter, every, extra)
    # Sparse traffic: every chunk gets its own draw, nothing queues behind anything.
    sparse = [float(i) for i in range(1, 601)]
    dues, stats = due_times(profile, "a", sparse)
    delays = [d - t for d, t in zip(dues, sparse, strict=True)]
    plain = [d for d in delays if d <= latency + jitter]
    stalled = [d for d in delays if d > latency + jitter]
    assert min(plain) >= latency - jitter and min(plain) < latency - 0.9 * jitter
    assert max(plain) > latency + 0.9 * jitter
    assert 600 / every[1] - 10 <= stats.bursts <= 600 / every[0] + 1 and len(stalled) <= stats.bursts
    assert all(latency - jitter + extra[0] <= d <= latency + jitter + extra[1] for d in stalled)
    assert due_times(profile, "a", sparse)[0] == dues  # reproducible
    assert due_times(profile, "b", sparse)[0] != dues
    # Dense traffic (1 kHz): due times never go backwards, and each stall holds a whole run of chunks.
    dense = [i / 1000 for i in range(20_000)]
    dues, stats = due_times(profile, "a", dense)
    assert all(a <= b for a, b in itertools.pairwise(dues))
    assert max(d - t for d, t in zip(dues, dense, strict=True)) <= profile.max_delay
    assert stats.bursts >= 3
    held_together = max(len(list(g)) for _, g in itertools.groupby(dues))
    assert held_together >= extra[0] * 1000 / 2, held_together


async def test_one_way_delay_is_at_least_the_latency_and_nothing_is_lost_or_reordered() -> None:
    """The lower bound holds however loaded the machine (nothing arrives early); the upper bound is
    the schedule's (test_due_times_are_seeded_in_order_and_bounded), and how close the live proxy keeps to it is
    bench.timing's figure."""
    latency, jitter, extra = 0.15, 0.05, (0.15, 0.35)
    server = StampServer()
    async with proxied(
        server, latency=latency, jitter=jitter, burst_every=(0.5, 1.0), burst_extra=extra, seed=1
    ) as proxy:
        down_delays, seqs = await stream_messages(proxy, count=400, gap=0.004)
    lo = latency - jitter - EARLY_SLACK
    for name, delays in (("upstream", server.up_delays), ("downstream", down_delays)):
        assert len(delays) == 400, name
        assert lo <= min(delays), (name, min(delays))
    assert server.seqs == list(range(400)) and seqs == list(range(400))
    for stats in (proxy.up, proxy.down):
        assert stats.bursts >= 1
        assert stats.bytes == stats.delivered == 400 * MSG.size
        assert stats.held == 0


async def test_byte_stream_is_exact_across_thousands_of_small_chunks() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.close()

    rng = random.Random(7)
    streams = [[rng.randbytes(rng.randint(1, 300)) for _ in range(1000)] for _ in range(4)]
    total = sum(map(len, itertools.chain.from_iterable(streams)))

    async def send_and_check(chunks: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        received = bytearray()

        async def receive() -> None:
            while data := await reader.read(CHUNK):
                received.extend(data)

        receiver = asyncio.create_task(receive())
        for chunk in chunks:
            writer.write(chunk)
            await asyncio.sleep(0.001)  # pacing, so that the proxy reads most writes as separate chunks
        writer.write_eof()
        await asyncio.wait_for(receiver, 10)
        writer.close()
        sent = b"".join(chunks)
        assert len(received) == len(sent)
        assert bytes(received) == sent

    # Jitter as large as the latency: each chunk's own due time is anywhere in [0, 2 x latency], so
    # anything but in-order delivery would show. The other direction misbehaves differently. Four
    # connections at once, because they must not disturb each other either.
    async with proxied(
        echo,
        upstream=DelayProfile(latency=0.02, jitter=0.02, burst_every=(0.05, 0.15), burst_extra=(0.01, 0.05)),
        downstream=DelayProfile(latency=0.01, jitter=0.01, burst_every=(0.1, 0.2), burst_extra=(0.02, 0.04)),
        seed=3,
    ) as proxy:
        await asyncio.gather(*(send_and_check(chunks) for chunks in streams))
    # Upstream the client's pacing makes the chunks; downstream they come bunched, as the proxy let
    # them out, so fewer.
    assert proxy.up.chunks >= 2500 and proxy.down.chunks >= 200, (proxy.up.chunks, proxy.down.chunks)
    assert proxy.up.bytes == proxy.up.delivered == proxy.down.bytes == proxy.down.delivered == total
    assert proxy.accepted == 4
    assert proxy.up.bursts >= 3 and proxy.down.bursts >= 3


async def test_bursts_hold_data_and_release_it_together() -> None:
    latency, extra = 0.05, (0.15, 0.2)
    server = StampServer(reply=False)
    # No jitter, so every delay beyond the latency is the stall's doing.
    async with proxied(
        server, upstream=DelayProfile(latency=latency, burst_every=(0.25, 0.4), burst_extra=extra), seed=5
    ) as proxy:
        await stream_messages(proxy, count=300, gap=0.004)
    assert server.seqs == list(range(300))
    delays = server.up_delays
    assert proxy.up.bursts >= 2
    stalled = [d for d in delays if d >= latency + extra[0]]
    # Each stall hits one chunk with the full extra delay (the "lost segment")...
    assert len(stalled) >= proxy.up.bursts, (len(stalled), proxy.up.bursts)
    # ...and holds everything sent during it (>= 0.15 s of 4-5 ms gaps), which then lands in one read.
    groups = [n for n in server.per_read if n >= 15]
    assert len(groups) >= proxy.up.bursts - 1, (server.per_read, proxy.up.bursts)
    # Outside stalls the delay is the plain latency (never less; how little more: bench.timing).
    assert min(delays) >= latency - EARLY_SLACK
    assert proxy.down.bursts == 0


# ------------------------------------------------------------------------------------- cut/restore


async def test_cut_and_restore_in_latency_mode() -> None:
    received = bytearray()
    ended = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                received.extend(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            ended.set()

    async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        t0 = time.perf_counter()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"ping"
        return time.perf_counter() - t0

    latency, jitter = 0.05, 0.01
    async with proxied(echo, latency=latency, jitter=jitter) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await round_trip(reader, writer) >= 2 * (latency - jitter) - EARLY_SLACK

        writer.write(b"lost")  # still inside the proxy's delay line when the cut comes
        await poll(lambda: proxy.up.held > 0, "the proxy to hold the write")
        await proxy.cut()
        assert proxy.is_cut
        try:
            leftover = await asyncio.wait_for(reader.read(), 2)
        except ConnectionResetError:
            leftover = b""
        assert leftover == b""
        writer.close()
        await asyncio.wait_for(ended.wait(), 2)
        assert bytes(received) == b"ping"  # held data died with the connection, it did not trickle out
        await poll(lambda: proxy.up.held == 0 and proxy.down.held == 0, "held data to be dropped")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)

        await proxy.restore()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await round_trip(reader, writer) >= 2 * (latency - jitter) - EARLY_SLACK
        writer.close()
    assert proxy.cuts >= 1 and proxy.accepted == 2


async def test_zero_latency_pumps_directly() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.close()

    async with proxied(echo) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 2) == b"hello"
        writer.close()
    # The direct path keeps no books.
    assert proxy.up.chunks == 0 and proxy.down.chunks == 0


def test_profile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        DelayProfile(latency=-0.1)
    with pytest.raises(ValueError):
        DelayProfile(burst_extra=(0.1, 0.2))  # stalls that never happen
    with pytest.raises(ValueError):
        DelayProfile(burst_every=(0.0, 1.0), burst_extra=(0.1, 0.2))
    assert DelayProfile(0.15, 0.05, (3.0, 6.0), (0.15, 0.35)).max_delay == pytest.approx(0.55)


# ------------------------------------------------------------------------------------ backpressure


async def test_backpressure_bounds_what_the_proxy_holds() -> None:
    max_buffer = 1 << 20
    # More than every loopback socket buffer on the way can swallow (tcp_rmem may allow 32 MiB).
    blocks = 768  # x 64 KiB = 48 MiB; about 10 MiB got stuck on the way in trials
    sent = 0
    done = asyncio.Event()

    def block(i: int) -> bytes:
        return bytes([i % 251]) * CHUNK

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            for i in range(blocks):
                writer.write(block(i))
                await writer.drain()
                sent += CHUNK
            writer.write_eof()
            done.set()
            await reader.read()
        finally:
            writer.close()

    async with proxied(flood, latency=0.01, max_buffer=max_buffer) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        # A small receive window on the non-reader makes the pile-up happen in the proxy, not here.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)

        await poll(lambda: proxy.down.paused >= 1, "the proxy to stop reading the flooding server")
        # Proof that the stall propagates: the server cannot finish while nobody reads.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.3)
        assert sent < blocks * CHUNK
        assert max_buffer <= proxy.down.max_held <= max_buffer + CHUNK, proxy.down.max_held

        for i in range(blocks):  # now read: everything arrives, in order and intact
            assert await asyncio.wait_for(reader.readexactly(CHUNK), 5) == block(i), i
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert done.is_set() and sent == blocks * CHUNK
    assert proxy.down.max_held <= max_buffer + CHUNK
    assert proxy.down.delivered == blocks * CHUNK
