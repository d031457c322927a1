"""The Python client SDK: connect, hello, send inputs, receive snapshots as numpy arrays, RTT.

    client = await ArbiterClient.connect("ws://127.0.0.1:8765/", name="ada")
    client.send_input(0.5, 0.0)                 # the game's inputs in the order of the welcome's spec
    client.send_input(dx=0.5, a=1, g=3)         # ... or by wire key
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
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from netcode.client_session import Bye, ClientSession, Error, Events, Info, Pong, Snapshot, Welcome
from netcode.protocol import BYE_RELOCATE
from netcode.replication.frames import peek_delta_tick
from netcode.signaling import (
    RtcAnswer,
    RtcState,
    TurnServers,
    VoiceSlots,
    encode_block,
    encode_talk,
    encode_turn_request,
)
from netcode.ws_client import WsClientConnection, ws_connect

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

    from netcode.rtc_client import RtcLink

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
        self.rtc: RtcLink | None = None  # the WebRTC path, once start_webrtc() was called
        self.voice_slots: list[int] = []  # who speaks in each receiving audio section (0: nobody)
        self.rtc_states: list[RtcState] = []
        self._turn_waiters: list[asyncio.Future[TurnServers]] = []
        self._rtc_closing: asyncio.Task[None] | None = None
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

        try:
            self.conn = conn = await ws_connect(url, self._on_message, on_close, timeout=timeout, rcvbuf=self.rcvbuf)
        except BaseException:
            # The connect's own error is what the caller gets; a close seen while connecting may have
            # failed the welcome future too, and nobody will await it.
            fut = self._welcome_fut
            if fut.done() and not fut.cancelled():
                fut.exception()
            fut.cancel()
            raise
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
    def send_input(self, *values: float | int, client_tick: int | None = None, **fields: float | int) -> int:
        """Send one input: the game's fields in the order of the welcome's spec (`values`) and/or
        by wire key (`fields`); absent fields are 0. Returns its sequence number."""
        if not fields:
            return self.send_fields(values, client_tick)  # ClientSession.input maps them, no dict
        if len(values) > len(self.session.fields):
            raise ValueError(f"{len(values)} input values for {len(self.session.fields)} fields")
        return self.send_fields({**dict(zip(self.session.input_keys, values, strict=False)), **fields}, client_tick)

    def send_fields(
        self, fields: Mapping[str, float | int] | Sequence[float | int], client_tick: int | None = None
    ) -> int:
        """Send one input given by wire key (absent keys are 0), or as values in the welcome spec's
        order; returns its sequence number."""
        assert self.conn is not None
        ack = self._count_ack if self._count_ack else None
        payload = self.session.input(fields, client_tick, ack)
        # Over WebRTC, movement takes the unreliable channel (the next input supersedes a lost one);
        # an input with anything else (an action) must arrive, so it takes the reliable one.
        rtc = self.rtc
        if rtc is None:
            self.conn.send(payload)
        else:
            named = fields if isinstance(fields, Mapping) else dict(zip(self.session.input_keys, fields, strict=False))
            move = self.session.move_keys
            if not rtc.send(payload, reliable=any(v for k, v in named.items() if k not in move)):
                self.conn.send(payload)
        return self.session.seq

    def send_raw(self, payload: bytes) -> None:
        assert self.conn is not None
        self.conn.send(payload)

    # -- WebRTC (netcode/rtc_client.py, docs/webrtc.md) ---------------------------------------------
    async def request_turn(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The server's ICE servers with fresh time-limited TURN credentials ([] without TURN)."""
        assert self.conn is not None
        fut: asyncio.Future[TurnServers] = self._loop.create_future()
        self._turn_waiters.append(fut)
        self.conn.send(encode_turn_request())
        return (await asyncio.wait_for(fut, timeout)).servers

    async def start_webrtc(
        self,
        ice: Sequence[dict[str, Any]] = (),
        *,
        relay_only: bool = False,
        microphone: MediaStreamTrack | None = None,
        voice_slots: int = 0,
        timeout: float = 15.0,
    ) -> RtcLink:
        """Offer WebRTC; returns the link, `.up` when the data channels carry the game."""
        from netcode.rtc_client import RtcLink

        assert self.conn is not None
        if self.rtc is not None:
            await self.rtc.close()
        self.rtc = RtcLink(self.conn.send, self._on_message, ice, relay_only=relay_only, microphone=microphone,
                           voice_slots=voice_slots)  # fmt: skip
        await self.rtc.start(timeout)
        return self.rtc

    def talk(self, on: bool) -> None:
        """Push-to-talk: the server forwards this client's microphone only while on."""
        assert self.conn is not None
        self.conn.send(encode_talk(on))

    def block(self, player: int, on: bool = True) -> None:
        """Stop (or resume) hearing a player."""
        assert self.conn is not None
        self.conn.send(encode_block(player, on))

    async def ping(self, timeout: float = 5.0) -> float:
        """Round trip time in seconds. Measured on `time.perf_counter`, not the loop clock: uvloop's
        `loop.time()` ticks in whole milliseconds, and a loopback round trip takes tens of µs."""
        assert self.conn is not None
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pong_waiters.append(fut)
        self.conn.send(self.session.ping(time.perf_counter()))
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
        if self.rtc is not None:
            await self.rtc.close()
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
        for ev in self.session.receive(payload, time.perf_counter()):
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
            elif isinstance(ev, RtcAnswer | RtcState):
                if isinstance(ev, RtcState):
                    self.rtc_states.append(ev)
                if self.rtc is not None:
                    self.rtc.on_signal(ev)
            elif isinstance(ev, VoiceSlots):
                self.voice_slots = ev.slots
            elif isinstance(ev, TurnServers):
                waiters_t, self._turn_waiters = self._turn_waiters, []
                for wt in waiters_t:
                    if not wt.done():
                        wt.set_result(ev)

    def _on_close(self, code: int, reason: str) -> None:
        exc = ConnectionError(f"connection closed ({code} {reason})")
        rtc, self.rtc = self.rtc, None
        if rtc is not None:  # its peer belonged to the closed session; a rejoin offers anew
            self._rtc_closing = self._loop.create_task(rtc.close())
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
