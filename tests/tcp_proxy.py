"""A small asyncio TCP proxy for tests.

Outages: put it between a client and a server, then `cut()` it (every open connection is aborted,
new ones are refused: the listening socket is closed) and `restore()` it (listening again on the
same port).

Bad networks: with `latency`/`jitter`/`burst_*` set, every chunk read from one side is delivered to
the other side after `latency ± jitter` seconds (one way, per direction), never reordered (a chunk is
never delivered before the one read ahead of it, so jittered chunks bunch up like real TCP), and at
random intervals a direction stalls for an extra `burst_extra` seconds: the chunk that hits the
stall and everything read behind it is held and released together, like a retransmission timeout.
Each direction holds at most `max_buffer` bytes; beyond that the proxy stops reading the source, so
a peer that does not read pushes back on the sender instead of growing the proxy's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import deque
from dataclasses import dataclass

CHUNK = 65536


@dataclass(frozen=True)
class DelayProfile:
    """How one direction of the proxy misbehaves. All times in seconds; one-way."""

    latency: float = 0.0
    jitter: float = 0.0
    # (min, max) of the uniform gap between stalls; None: never stall.
    burst_every: tuple[float, float] | None = None
    # (min, max) of the uniform extra delay a stall adds.
    burst_extra: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError(f"latency and jitter must be >= 0: {self}")
        lo, hi = self.burst_extra
        if not 0 <= lo <= hi:
            raise ValueError(f"burst_extra must be 0 <= min <= max: {self}")
        if self.burst_every is None:
            if hi > 0:
                raise ValueError(f"burst_extra without burst_every would never stall: {self}")
        elif not 0 < self.burst_every[0] <= self.burst_every[1]:
            raise ValueError(f"burst_every must be 0 < min <= max: {self}")

    @property
    def active(self) -> bool:
        return self.latency > 0 or self.jitter > 0 or self.burst_every is not None

    @property
    def max_delay(self) -> float:
        """The largest one-way delay the profile itself can impose (before scheduling slack)."""
        return self.latency + self.jitter + self.burst_extra[1]


@dataclass
class DirectionStats:
    """Counters for one direction, summed over all connections. Only kept in latency mode: the
    direct path stays a bare read/write loop."""

    chunks: int = 0  # chunks read from the source
    bytes: int = 0  # bytes read from the source
    delivered: int = 0  # bytes written to the destination
    max_delay: float = 0.0  # largest observed read-to-write delay of any chunk, seconds
    bursts: int = 0  # stalls that hit a chunk
    held: int = 0  # bytes read but not yet written and drained, right now
    max_held: int = 0  # peak of `held` within one connection
    paused: int = 0  # times reading stopped because `max_buffer` bytes were held


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    # call_at on the loop clock: the deadline is the one computed at arrival, with no drift from
    # re-deriving a relative delay.
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(when, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class _Direction:
    """One direction of one connection in latency mode: a reader task queues chunks with a due time,
    a single delivery task writes them in order once due."""

    def __init__(
        self,
        profile: DelayProfile,
        rng: random.Random,
        stats: DirectionStats,
        max_buffer: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.profile = profile
        self.stats = stats
        self._rng = rng
        self._max_buffer = max_buffer
        self._loop = loop
        self._queue: deque[tuple[float, float, bytes | None]] = deque()  # (due, arrived, data | EOF)
        self._last_due = 0.0
        every = profile.burst_every
        self._next_burst = loop.time() + rng.uniform(*every) if every is not None else float("inf")
        self._held = 0
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def _due(self, now: float) -> float:
        p = self.profile
        delay = p.latency + (self._rng.uniform(-p.jitter, p.jitter) if p.jitter else 0.0)
        if now >= self._next_burst and p.burst_every is not None:
            # This chunk is the "lost segment": it waits for its retransmission, and because due
            # times never decrease, everything read behind it waits too (head-of-line blocking).
            self.stats.bursts += 1
            delay += self._rng.uniform(*p.burst_extra)
            self._next_burst = now + self._rng.uniform(*p.burst_every)
        # TCP never reorders: a chunk cannot overtake the one before it.
        due = max(now + max(delay, 0.0), self._last_due)
        self._last_due = due
        return due

    async def read_from(self, reader: asyncio.StreamReader) -> None:
        while True:
            if self._held >= self._max_buffer:
                self.stats.paused += 1
                while self._held >= self._max_buffer:
                    self._room.clear()
                    await self._room.wait()
            data = await reader.read(CHUNK)
            now = self._loop.time()
            if not data:
                # The FIN travels like data: after everything before it, plus the base latency.
                self._queue.append((max(now + self.profile.latency, self._last_due), now, None))
                self._more.set()
                return
            n = len(data)
            self.stats.chunks += 1
            self.stats.bytes += n
            self._held += n
            self.stats.held += n
            if self._held > self.stats.max_held:
                self.stats.max_held = self._held
            self._queue.append((self._due(now), now, data))
            self._more.set()

    async def deliver_to(self, writer: asyncio.StreamWriter) -> None:
        loop = self._loop
        queue = self._queue
        while True:
            if not queue:
                self._more.clear()
                await self._more.wait()
                continue
            due = queue[0][0]
            if due > loop.time():
                await _sleep_until(loop, due)
                continue
            now = loop.time()
            oldest = queue[0][1]  # arrival times only grow along the queue: the first waited longest
            parts: list[bytes] = []
            eof = False
            # Everything already due goes out as one write: chunks released by a stall arrive together.
            while queue and queue[0][0] <= now:
                data = queue.popleft()[2]
                if data is None:
                    eof = True
                    break
                parts.append(data)
            if parts:
                n = sum(map(len, parts))
                if now - oldest > self.stats.max_delay:
                    self.stats.max_delay = now - oldest
                writer.write(parts[0] if len(parts) == 1 else b"".join(parts))
                self.stats.delivered += n
                # Bytes stay "held" until the destination took them: a peer that does not read keeps
                # the proxy's buffer full and so stops the proxy reading the source.
                await writer.drain()
                self._release(n)
            if eof:
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()
                return

    def _release(self, n: int) -> None:
        self._held -= n
        self.stats.held -= n
        if self._held < self._max_buffer:
            self._room.set()

    def drop(self) -> None:
        """The connection is gone: whatever is still held is lost with it."""
        self.stats.held -= self._held
        self._held = 0
        self._queue.clear()


class TcpProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        latency: float = 0.0,
        jitter: float = 0.0,
        burst_every: tuple[float, float] | None = None,
        burst_extra: tuple[float, float] = (0.0, 0.0),
        upstream: DelayProfile | None = None,
        downstream: DelayProfile | None = None,
        seed: int | None = 0,
        max_buffer: int = 8 * 1024 * 1024,
    ) -> None:
        """`latency`, `jitter`, `burst_every`, `burst_extra` apply to both directions, independently;
        `upstream` (client to target) / `downstream` (target to client) override them per direction.
        With every knob at zero the proxy pumps bytes straight through, as cheaply as it can."""
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        both = DelayProfile(latency, jitter, burst_every, burst_extra)
        self.upstream_profile = upstream if upstream is not None else both
        self.downstream_profile = downstream if downstream is not None else both
        self.seed = seed
        self.max_buffer = max_buffer
        self.up = DirectionStats()
        self.down = DirectionStats()
        self._delayed = self.upstream_profile.active or self.downstream_profile.active
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._delayed_tasks: set[asyncio.Task[None]] = set()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def start(self) -> TcpProxy:
        await self._listen()
        return self

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def cut(self) -> None:
        """Refuse new connections and abort every open one (both sides see a reset)."""
        self.cuts += 1
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        # Held data must not trickle out after the cut: stop the delivery tasks now.
        for task in list(self._delayed_tasks):
            task.cancel()
        # Let the aborts and the pump tasks settle.
        await asyncio.sleep(0)

    async def restore(self) -> None:
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before a cut
            client_writer.transport.abort()
            return
        self.accepted += 1
        conn_no = self.accepted
        try:
            server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        if self._server is None:
            client_writer.transport.abort()
            server_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        if self._delayed:
            await self._run_delayed(conn_no, client_reader, client_writer, server_reader, server_writer)
            return
        up = asyncio.ensure_future(self._pump(client_reader, server_writer))
        down = asyncio.ensure_future(self._pump(server_reader, client_writer))
        for task in (up, down):
            self._track(task)
        await asyncio.gather(up, down, return_exceptions=True)
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    def _rng(self, conn_no: int, direction: str) -> random.Random:
        if self.seed is None:
            return random.Random()
        # A string seed is hashed with SHA-512, not hash(): the same across processes and runs.
        return random.Random(f"{self.seed}:{conn_no}:{direction}")

    async def _run_delayed(
        self,
        conn_no: int,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        server_reader: asyncio.StreamReader,
        server_writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        up = _Direction(self.upstream_profile, self._rng(conn_no, "up"), self.up, self.max_buffer, loop)
        down = _Direction(self.downstream_profile, self._rng(conn_no, "down"), self.down, self.max_buffer, loop)
        tasks = [
            asyncio.ensure_future(up.read_from(client_reader)),
            asyncio.ensure_future(up.deliver_to(server_writer)),
            asyncio.ensure_future(down.read_from(server_reader)),
            asyncio.ensure_future(down.deliver_to(client_writer)),
        ]
        for task in tasks:
            self._track(task)
            self._delayed_tasks.add(task)
            task.add_done_callback(self._delayed_tasks.discard)
            # Several tasks can fail together (a reset hits both directions); only one is looked at
            # below, the rest must not be reported as "exception never retrieved".
            task.add_done_callback(_consume)
        clean = False
        try:
            pending: set[asyncio.Future[None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # A clean EOF ends only its own direction (delivered as a half-close after the data);
                # a reset, a failed write or a cut ends the whole connection at once.
                if any(t.cancelled() or t.exception() is not None for t in done):
                    break
            else:
                clean = True
        finally:
            for task in tasks:
                task.cancel()
            up.drop()
            down.drop()
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                if clean:
                    writer.close()  # both FINs were delivered: let the last bytes flush
                else:
                    writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One direction ended: end the whole connection (a half-open PostgreSQL link is useless).
            writer.transport.abort()
