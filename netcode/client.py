"""The Python client SDK: connect, hello, send inputs, receive snapshots as numpy arrays, RTT.

    client = await ArbiterClient.connect("ws://127.0.0.1:8765/", name="ada")
    client.send_input(0.5, 0.0)
    snap = await client.next_snapshot()
    me = snap.entities[snap.entities["id"] == client.player]

It is a thin shell over the Sans-I/O `ClientSession` (netcode/client_session.py) and the
`WsClientConnection` transport, so the bots, the tests and game clients share one protocol code path.

Reconnection: give `reconnect=Reconnect(locator)` and the client rejoins by itself when the server
says `bye` "relocate" (a drain: the campaign goes on elsewhere, or here after a restart) and, with
`on_drop` (the default), when the connection is lost without a bye (a crashed server). The locator
says where to rejoin and with which fresh join token: `FixedLocator` (the same URL), or one that asks
the hub (`netcode/hub_locator.py`). The same ship comes back: the server resumes the account's ship.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from netcode.client_session import Bye, ClientSession, Error, Events, Info, Pong, Snapshot, Welcome
from netcode.protocol import BYE_RELOCATE
from netcode.replication.frames import peek_delta_tick
from netcode.ws_client import WsClientConnection, ws_connect

log = logging.getLogger("arbiter.client")

# Enough of a snapshot frame for peek_snapshot_tick: map header, tick, ack and the body's bin header.
SNAPSHOT_PREFIX_BYTES = 48


class ServerError(RuntimeError):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"server error {code}: {msg}")
        self.code = code
        self.msg = msg


class Locator(Protocol):
    """Where to (re)join a campaign: `(ws_url, join_token)`; a fresh token each call (tokens are
    single-use). Raise to say "not now" (the client retries until its reconnect deadline)."""

    def locate(self) -> Awaitable[tuple[str, str]]: ...


@dataclass(slots=True)
class FixedLocator:
    """Rejoin at `url` (a restarted server, a load balancer in front of the hosts); whoever knows
    where the campaign went may repoint `url`."""

    url: str
    token_factory: Callable[[], str] | None = None

    async def locate(self) -> tuple[str, str]:
        return self.url, (self.token_factory() if self.token_factory is not None else "")


@dataclass(slots=True)
class Reconnect:
    locator: Locator
    timeout: float = 30.0  # give up after this long without a welcome
    on_drop: bool = True  # also after a connection lost without a bye (not after kicks, bans, errors)
    backoff: float = 0.1  # first retry delay; doubles up to 2 s, with jitter


class ArbiterClient:
    def __init__(self, decode: bool = True, keep_events: int = 1024) -> None:
        self.session = ClientSession()
        self.decode = decode
        self.conn: WsClientConnection | None = None
        self.welcome: Welcome | None = None
        self.latest: Snapshot | None = None
        self.snapshots = 0
        self.snapshot_bytes = 0
        self.errors: collections.deque[Error] = collections.deque(maxlen=keep_events)
        self.events: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=keep_events)
        self.bye: Bye | None = None
        self.info: dict[str, Any] | None = None  # spectators: the newest `st` figures
        self._count_ack = 0  # count-only clients: newest delta snapshot id received
        self.on_snapshot: Callable[[Snapshot], None] | None = None
        self._welcome_fut: asyncio.Future[Welcome] | None = None
        self._snap_waiters: list[asyncio.Future[Snapshot]] = []
        self._pong_waiters: list[asyncio.Future[float]] = []
        self._loop = asyncio.get_running_loop()
        self.name = ""
        self.watch = False
        self.rcvbuf: int | None = None
        self.reconnect: Reconnect | None = None
        self.relocations = 0  # successful rejoins
        self.rejoin_cause = ""  # why the last rejoin started: BYE_RELOCATE, or "connection lost"
        self.reconnecting = False
        self.gave_up: BaseException | None = None  # why the last reconnection failed
        self._reconnect_task: asyncio.Task[None] | None = None
        self._rejoined = asyncio.Event()

    # -- connecting -------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        url: str,
        name: str = "player",
        token: str = "",
        *,
        decode: bool = True,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
        reconnect: Reconnect | None = None,
        watch: bool = False,
    ) -> ArbiterClient:
        """`watch`: connect as a spectator (no ship; `info` holds the newest `st` figures).
        `reconnect`: rejoin by itself after a relocation (module docstring)."""
        self = cls(decode=decode)
        self.name, self.rcvbuf, self.reconnect, self.watch = name, rcvbuf, reconnect, watch
        await self._join(url, token, timeout)
        return self

    async def _join(self, url: str, token: str, timeout: float) -> None:
        # The future exists before the upgrade: a refusal (banned address, connection flood) may
        # arrive right behind the 101 and must fail this connect with its ServerError, not time out.
        self._welcome_fut = self._loop.create_future()
        mine: list[WsClientConnection] = []

        def on_close(code: int, reason: str) -> None:
            if not mine or mine[0] is self.conn:  # a superseded connection's close is no news
                self._on_close(code, reason)

        self.conn = conn = await ws_connect(url, self._on_message, on_close, timeout=timeout, rcvbuf=self.rcvbuf)
        mine.append(conn)
        try:
            if self._welcome_fut.done():
                self._welcome_fut.result()  # raises the refusal
            conn.send(self.session.hello(self.name, token, self.watch))
            self.welcome = await asyncio.wait_for(self._welcome_fut, timeout)
        except BaseException:
            conn.abort()
            raise
        if not self.decode and self.session.decoder is None:
            # Counting raw snapshots needs only their header: skip the entity bytes as they arrive.
            conn.count_only(SNAPSHOT_PREFIX_BYTES)

    @property
    def player(self) -> int:
        assert self.welcome is not None
        return self.welcome.player

    @property
    def is_open(self) -> bool:
        return self.conn is not None and self.conn.is_open

    # -- sending ----------------------------------------------------------------------------------
    def send_input(
        self,
        dx: float,
        dy: float,
        action: int = 0,
        arg: int = 0,
        client_tick: int | None = None,
        *,
        arg2: int = 0,
        arg3: int = 0,
        txn: int = 0,
    ) -> int:
        """Send one input; returns its sequence number. `arg2`, `arg3` and `txn` are for actions
        that need them (startales' GIFT: resource, amount, transaction id)."""
        assert self.conn is not None
        ack = self._count_ack if self._count_ack else None
        self.conn.send(self.session.input(dx, dy, action, arg, client_tick, ack, arg2, arg3, txn))
        return self.session.seq

    def send_raw(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.send(payload)

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip time in seconds, measured against the loop clock."""
        assert self.conn is not None
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pong_waiters.append(fut)
        self.conn.send(self.session.ping(self._loop.time()))
        return await asyncio.wait_for(fut, timeout)

    async def next_snapshot(self, timeout: float = 5.0) -> Snapshot:
        fut: asyncio.Future[Snapshot] = self._loop.create_future()
        self._snap_waiters.append(fut)
        return await asyncio.wait_for(fut, timeout)

    async def wait_rejoined(self, timeout: float = 30.0) -> None:
        """Wait until the next successful rejoin (after a relocation); raises what made it give up."""
        await asyncio.wait_for(self._rejoined.wait(), timeout)
        self._rejoined.clear()

    async def close(self, timeout: float = 2.0) -> None:
        self.reconnect = None  # a close we asked for is not a drop
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.conn is None:
            return
        self.conn.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.conn.closed), timeout)
        except TimeoutError:
            self.conn.abort()

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int, str]:
        assert self.conn is not None
        return await asyncio.wait_for(asyncio.shield(self.conn.closed), timeout)

    # -- receiving --------------------------------------------------------------------------------
    def _on_message(self, payload: bytes) -> None:
        if not self.decode and self.welcome is not None:
            if self.session.decoder is not None:
                # Count-only load clients still acknowledge what they received, exactly like a real
                # client, so the server does the same delta work for them; they skip the decoding.
                tick = peek_delta_tick(payload)
                if tick is not None:
                    self._count_ack = tick
                    self.snapshots += 1
                    self.snapshot_bytes += len(payload)
                    return
            head = self.session.peek_snapshot_tick(payload)
            if head is not None:
                self.snapshots += 1
                return
        for ev in self.session.receive(payload, self._loop.time()):
            if isinstance(ev, Snapshot):
                self.snapshots += 1
                self.snapshot_bytes += len(payload)
                self.latest = ev
                if self.on_snapshot is not None:
                    self.on_snapshot(ev)
                waiters, self._snap_waiters = self._snap_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(ev)
            elif isinstance(ev, Events):
                self.events.extend(ev.events)
            elif isinstance(ev, Pong):
                waiters_p, self._pong_waiters = self._pong_waiters, []
                for wp in waiters_p:
                    if not wp.done():
                        wp.set_result(ev.rtt)
            elif isinstance(ev, Welcome):
                if self._welcome_fut is not None and not self._welcome_fut.done():
                    self._welcome_fut.set_result(ev)
            elif isinstance(ev, Error):
                self.errors.append(ev)
                if self._welcome_fut is not None and not self._welcome_fut.done():
                    self._welcome_fut.set_exception(ServerError(ev.code, ev.msg))
            elif isinstance(ev, Bye):
                self.bye = ev
            elif isinstance(ev, Info):
                self.info = ev.figures

    def _on_close(self, code: int, reason: str) -> None:
        exc = ConnectionError(f"connection closed ({code} {reason})")
        rc = self.reconnect
        if rc is not None and self.welcome is not None and not self.reconnecting:
            relocated = self.bye is not None and self.bye.reason == BYE_RELOCATE
            if relocated or (rc.on_drop and self.bye is None):
                self.rejoin_cause = BYE_RELOCATE if relocated else "connection lost"
                self.reconnecting = True
                self._reconnect_task = self._loop.create_task(self._rejoin(rc))
        if self._welcome_fut is not None and not self._welcome_fut.done():
            last = self.errors[-1] if self.errors else None
            self._welcome_fut.set_exception(ServerError(last.code, last.msg) if last else exc)
        for w in self._snap_waiters:
            if not w.done():
                w.set_exception(exc)
        for wp in self._pong_waiters:
            if not wp.done():
                wp.set_exception(exc)

    # -- reconnection -----------------------------------------------------------------------------
    async def _rejoin(self, rc: Reconnect) -> None:
        """Rejoin through the locator until a welcome, or give up after `rc.timeout`."""
        deadline = self._loop.time() + rc.timeout
        delay = rc.backoff
        old = self.session
        try:
            while True:
                # A fresh session for the new connection, continuing the input sequence of the old one.
                self.session = ClientSession()
                self.session.seq = old.seq
                self.session.last_ack_seq = old.last_ack_seq
                self._count_ack = 0
                left = deadline - self._loop.time()
                try:
                    url, token = await asyncio.wait_for(rc.locator.locate(), max(0.1, left))
                    self.bye = None
                    await self._join(url, token, max(0.5, min(5.0, left)))
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._loop.time() + delay >= deadline:
                        self.gave_up = exc
                        log.warning("%s: no rejoin within %.0f s: %s", self.name, rc.timeout, exc)
                        return
                    log.debug("%s: rejoin failed (%s); retrying in %.2f s", self.name, exc, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(2.0, delay * 2)
            self.relocations += 1
            self.gave_up = None
            self._rejoined.set()
        finally:
            self.reconnecting = False
