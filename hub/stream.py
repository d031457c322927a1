"""`/v1/stream`: a player's WebSocket. The hub pushes friends' presence, chat and notifications.

Client → hub (JSON text frames):
    {"op": "auth", "token": ACCESS}        first frame, unless the upgrade carried Authorization: Bearer
    {"op": "join", "channel": "c:<campaign>"}   receive that campaign's chat; answered with its last N messages
    {"op": "leave", "channel": "c:<campaign>"}
    {"op": "ping"}
Hub → client: {"t": "hello" | "history" | "chat" | "presence" | "notify" | "resync" | "pong" | "error", ...}
Direct messages reach every stream of their two accounts without a join.

Every hub process subscribes to the bus (persistence/redis_bus.py) and hands each event to its
own streams: an event is encoded once and queued to every recipient. A stream's queue is bounded
(`stream_queue` messages); a client that does not read is cut off (close 4008) rather than buffered
without bound. After the bus reconnects (Redis restarted), every stream gets `{"t": "resync"}`:
events may have been missed, so a client reloads what it shows (history over HTTP, friends).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any, Final

from aiohttp import WSMsgType, web

from engine.security.auth import AuthError
from hub import validate as v
from hub.chat import history_frame
from hub.http import dumps
from hub.sessions import Principal, bearer
from hub.state import Hub
from persistence.redis_layout import REDIS_DOWN, pause

log = logging.getLogger("arbiter.hub.stream")

CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_REVOKED: Final = 4003
CLOSE_TOO_SLOW: Final = 4008
CLOSE_POLICY: Final = 1008
MAX_IN_FRAME: Final = 4096
MAX_ERRORS: Final = 10
IN_RATE: Final = 20.0  # client frames per second (token bucket)
IN_BURST: Final = 40.0


class Conn:
    __slots__ = ("account", "channels", "closed", "errors", "friends", "id", "out", "session", "tokens",
                 "tokens_at", "wake", "ws")  # fmt: skip

    def __init__(self, conn_id: str, who: Principal, ws: web.WebSocketResponse) -> None:
        self.id = conn_id
        self.account = who.account
        self.session = who.session
        self.ws = ws
        self.out: collections.deque[str] = collections.deque()
        self.wake = asyncio.Event()
        self.channels: set[str] = set()
        self.friends: set[str] = set()
        self.closed = False
        self.errors = 0
        self.tokens = IN_BURST
        self.tokens_at = time.monotonic()


class Streams:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.conns: dict[str, Conn] = {}
        self.by_account: dict[str, set[Conn]] = {}
        self.by_channel: dict[str, set[Conn]] = {}
        self.watchers: dict[str, set[Conn]] = {}  # account -> local streams of its friends
        self._seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        m = hub.metrics.deliveries
        self._count = {t: m.labels(t) for t in ("chat", "presence", "notify", "history", "other")}

    # -- delivery ----------------------------------------------------------------------------------
    def send(self, conn: Conn, frame: str, kind: str = "other") -> None:
        if conn.closed:
            return
        if len(conn.out) >= self.hub.cfg.stream_queue:
            self.hub.metrics.stream_slow.inc()
            self.cut(conn, CLOSE_TOO_SLOW, "too slow: messages were not read")
            return
        conn.out.append(frame)
        conn.wake.set()
        self._count.get(kind, self._count["other"]).inc()

    def send_all(self, conns: set[Conn] | list[Conn], frame: str, kind: str) -> int:
        n = 0
        limit = self.hub.cfg.stream_queue
        for conn in list(conns):
            if conn.closed:
                continue
            if len(conn.out) >= limit:
                self.hub.metrics.stream_slow.inc()
                self.cut(conn, CLOSE_TOO_SLOW, "too slow: messages were not read")
                continue
            conn.out.append(frame)
            conn.wake.set()
            n += 1
        if n:
            self._count[kind].inc(n)
        return n

    async def _writer(self, conn: Conn) -> None:
        ws = conn.ws
        try:
            while not conn.closed:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.out:
                    await ws.send_str(conn.out.popleft())  # returns at once unless the socket is full
        except (ConnectionError, RuntimeError):
            self.cut(conn, CLOSE_POLICY, "write failed")

    def cut(self, conn: Conn, code: int, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.out.clear()
        conn.wake.set()
        self._spawn(conn.ws.close(code=code, message=reason.encode()[:120]))

    def close_sessions(self, sessions: list[str]) -> None:
        dead = set(sessions)
        for conn in list(self.conns.values()):
            if conn.session in dead:
                self.cut(conn, CLOSE_REVOKED, "session revoked")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- bus events --------------------------------------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("t")
        self.hub.metrics.bus_events.labels(str(kind)[:16]).inc()
        if kind == "chat":
            channel = str(event.get("channel", ""))
            frame = dumps(event)
            if channel.startswith("dm:"):
                _, a, b = channel.split(":", 2)
                targets = self.by_account.get(a, set()) | self.by_account.get(b, set())
            else:
                targets = self.by_channel.get(channel, set())
            self.send_all(targets, frame, "chat")
        elif kind == "presence":
            targets = self.watchers.get(str(event.get("account")), set())
            if targets:
                self.send_all(targets, dumps(event), "presence")
        elif kind == "notify":
            targets = self.by_account.get(str(event.get("account")), set())
            if targets:
                self.send_all(targets, dumps(event), "notify")
        elif kind == "revoke":
            self.hub.revoked.add([str(s) for s in event.get("sessions", [])])
            self.close_sessions([str(s) for s in event.get("sessions", [])])
        elif kind == "social":
            for account in event.get("accounts", []):
                for conn in list(self.by_account.get(str(account), ())):
                    self._spawn(self._reload(conn))
        elif kind == "seat":
            self._spawn(self._seat_free(str(event.get("campaign", ""))))

    async def _seat_free(self, campaign: str) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            for account in await self.hub.seats.waiting(campaign, 10):
                for conn in self.by_account.get(account, set()):
                    self.send(conn, dumps({"t": "notify", "kind": "seat", "campaign": campaign}), "notify")

    async def resync(self) -> None:
        """The bus is (re)connected: claim our streams' presence again and tell clients to reload."""
        with contextlib.suppress(*REDIS_DOWN):
            await self.refresh_presence()
        frame = dumps({"t": "resync"})
        self.send_all(list(self.conns.values()), frame, "other")

    async def refresh_presence(self) -> None:
        if self.conns:
            await self.hub.presence.hub_refresh(
                [(c.account, c.id) for c in self.conns.values()], self.hub.cfg.presence_ttl_s
            )

    async def presence_loop(self, stop: asyncio.Event) -> None:
        while not await pause(stop, self.hub.cfg.presence_ttl_s / 3):
            with contextlib.suppress(*REDIS_DOWN):
                await self.refresh_presence()

    # -- one stream --------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_IN_FRAME, compress=False)
        await ws.prepare(request)
        who = await self._authenticate(request, ws)
        if who is None:
            return ws
        if sum(1 for c in self.conns.values() if c.account == who.account) >= self.hub.cfg.streams_per_account:
            await ws.close(code=CLOSE_POLICY, message=b"too many streams for this account")
            return ws
        self._seq += 1
        conn = Conn(f"{self.hub.hub_id}:{self._seq}", who, ws)
        self._register(conn)
        writer = asyncio.get_running_loop().create_task(self._writer(conn))
        try:
            await self._reload(conn)
            await self._announce(conn, arrived=True)
            statuses = await self._statuses(sorted(conn.friends))
            self.send(conn, dumps({"t": "hello", "account": conn.account, "friends": statuses}))
            async for msg in ws:
                if conn.closed:
                    break
                if msg.type != WSMsgType.TEXT:
                    self._offence(conn, "send JSON text frames")
                    continue
                await self._op(conn, msg.data)
        finally:
            self._unregister(conn)
            conn.closed = True
            conn.wake.set()
            writer.cancel()
            with contextlib.suppress(*REDIS_DOWN):
                await self._announce(conn, arrived=False)
        return ws

    async def _authenticate(self, request: web.Request, ws: web.WebSocketResponse) -> Principal | None:
        token = bearer(request.headers.get("Authorization"))
        if token is None:
            try:
                msg = await ws.receive(timeout=self.hub.cfg.stream_auth_timeout_s)
                frame = _frame(msg.data) if msg.type == WSMsgType.TEXT else None
            except TimeoutError:
                frame = None
            if isinstance(frame, dict) and frame.get("op") == "auth" and isinstance(frame.get("token"), str):
                token = frame["token"]
        try:
            return self.hub.access.verify(token)
        except AuthError as exc:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(dumps({"t": "error", "error": "unauthorized", "message": exc.public_message}))
                await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
            return None

    def _register(self, conn: Conn) -> None:
        self.conns[conn.id] = conn
        self.by_account.setdefault(conn.account, set()).add(conn)
        self.hub.metrics.streams.set(len(self.conns))

    def _unregister(self, conn: Conn) -> None:
        self.conns.pop(conn.id, None)
        _discard(self.by_account, conn.account, conn)
        for channel in conn.channels:
            _discard(self.by_channel, channel, conn)
        for friend in conn.friends:
            _discard(self.watchers, friend, conn)
        self.hub.metrics.streams.set(len(self.conns))

    async def _reload(self, conn: Conn) -> None:
        """Friends (whose presence this stream watches) and the channels it may still listen to."""
        friends = set(await self.hub.social.friends(conn.account))
        for gone in conn.friends - friends:
            _discard(self.watchers, gone, conn)
        for new in friends - conn.friends:
            self.watchers.setdefault(new, set()).add(conn)
        conn.friends = friends
        if conn.channels:
            allowed = {f"c:{c.campaign_id}" for c in await self.hub.campaigns.of_member(conn.account)}
            for channel in conn.channels - allowed:
                conn.channels.discard(channel)
                _discard(self.by_channel, channel, conn)

    async def _statuses(self, accounts: list[str]) -> list[dict[str, Any]]:
        names = await self.hub.names(accounts)
        try:
            states = await self.hub.presence.status(accounts)
        except REDIS_DOWN:
            states = {}
        out = []
        for a in accounts:
            st = states.get(a)
            out.append({"account": a, **names.get(a, {}), "status": st.status if st else None,
                        "campaign": st.campaign if st else None})  # fmt: skip
        return out

    async def _announce(self, conn: Conn, *, arrived: bool) -> None:
        """Presence: a first stream makes the account online, the last one offline (unless it plays)."""
        presence = self.hub.presence
        try:
            if arrived:
                changed = await presence.hub_connected(conn.account, conn.id, self.hub.cfg.presence_ttl_s)
            else:
                changed = await presence.hub_disconnected(conn.account, conn.id)
        except REDIS_DOWN:
            return
        if changed:
            st = (await presence.status([conn.account]))[conn.account]
            await self.hub.publish({"t": "presence", "account": conn.account, **st.to_json()})

    def _offence(self, conn: Conn, message: str) -> None:
        conn.errors += 1
        self.send(conn, dumps({"t": "error", "message": message}))
        if conn.errors >= MAX_ERRORS:
            self.cut(conn, CLOSE_POLICY, "too many bad frames")

    async def _op(self, conn: Conn, data: str) -> None:
        now = time.monotonic()
        conn.tokens = min(IN_BURST, conn.tokens + (now - conn.tokens_at) * IN_RATE)
        conn.tokens_at = now
        if conn.tokens < 1:
            self.cut(conn, CLOSE_POLICY, "too many frames")
            return
        conn.tokens -= 1
        frame = _frame(data)
        if frame is None or not isinstance(frame.get("op"), str):
            self._offence(conn, 'frames are JSON objects with an "op"')
            return
        op = frame["op"]
        if op == "ping":
            self.send(conn, '{"t":"pong"}')
        elif op in ("join", "leave"):
            channel = frame.get("channel")
            if not isinstance(channel, str) or not channel.startswith("c:") or len(channel) > 64:
                self._offence(conn, 'channel must be "c:<campaign id>"')
                return
            if op == "leave":
                conn.channels.discard(channel)
                _discard(self.by_channel, channel, conn)
                return
            member = await self.hub.campaigns.member(channel[2:], conn.account)
            if member is None or member.kicked:
                self._offence(conn, "not a member of that campaign")
                return
            conn.channels.add(channel)
            self.by_channel.setdefault(channel, set()).add(conn)
            self.send(conn, await history_frame(self.hub, channel, self.hub.cfg.chat_history), "history")
        elif op == "auth":
            self._offence(conn, "already authenticated")
        else:
            self._offence(conn, f"unknown op {op[:16]!r}")

    async def close(self) -> None:
        for conn in list(self.conns.values()):
            self.cut(conn, 1001, "hub shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)


def _discard(index: dict[str, set[Conn]], key: str, conn: Conn) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(conn)
        if not group:
            del index[key]


def _frame(data: str) -> dict[str, Any] | None:
    """A client frame: one JSON object by the HTTP bodies' rules (validate.parse_json: no NaN, no
    duplicate keys, bounded nesting), or None."""
    try:
        return v.parse_json(data.encode("utf-8", "replace"))
    except v.Invalid:
        return None
