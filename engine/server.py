"""The dedicated campaign server: transport wiring, the tick task, HTTP health/stats, shutdown.

The tick path (inputs filed → sim step → events routed → snapshots written) never awaits: every
socket write is a synchronous, bounded `send_parts` that drops a superseded snapshot for a client
whose backlog is over the bound, and disconnects a client that stays backlogged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from engine.agones import AgonesLink, link_server
from engine.campaign import Campaign
from engine.clients import Client, flush_session
from engine.door import Door
from engine.info import info_response
from engine.journal import Journal
from engine.latency import PING_INTERVAL_S, rewind_bound
from engine.metrics import metrics_handler, process_metrics
from engine.progress import ProgressSync
from engine.recovery import RecoveryReport, open_campaign
from engine.relocation import ShipConfig, Shipper, restore_from_pg
from engine.security import token_replay
from engine.security.admin import AdminServer, start_admin
from engine.security.auth import AuthError, TokenVerifier, bearer_claims
from engine.security.fairplay.referee import FairPlayConfig
from engine.security.fairplay.server_hooks import AdminAdapter, ServerFairPlay, open_store, peer_ip
from engine.security.fairplay.signals import TimingStats
from engine.snapshots import SnapshotSender
from engine.spectate import Spectators
from engine.stats import TickStats
from engine.ticker import FixedStep
from engine.web_routes import WebRoutes
from engine.webrtc.relay import WebRtcConfig, WebRtcRelay
from netcode.protocol import (
    BYE_RELOCATE,
    MAX_HELLO_FRAME,
    CloseCode,
    ErrorCode,
    dtype_to_wire,
)
from netcode.session import HelloEvent, InputEvent, PingEvent, ServerSession, SessionState
from netcode.signaling import MAX_SIGNAL_FRAME, SIGNAL_EVENTS
from netcode.ws_server import DoorLimits, HttpAnswer, WsServerConnection, connection_factory
from persistence.pg_overflow import SqliteOverflow
from persistence.pg_writer import PgWriteBehind
from sim.games import DEFAULT_GAME

log = logging.getLogger("arbiter.server")


@dataclass(slots=True)
class ServerConfig:
    game: str = DEFAULT_GAME
    campaign: str = "default"
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: str = "data"  # "" keeps the campaign in memory only (no journal, no recovery)
    durability: str = "normal"  # SQLite synchronous=NORMAL (survives kill -9) or "full" (power loss)
    snapshot_every_s: float = 10.0
    hash_every: int = 60  # record the world's state hash in the journal every N ticks
    store_commit_delay: float = 0.0  # test hook: a deliberately slow disk
    orphan_grace: float = 60.0
    pg_dsn: str = ""  # PostgreSQL for accounts' progress and the ledger (write-behind); "" = off
    progress_every_s: float = 5.0  # after a recovery, ships whose player has not come back leave then
    tick_rate: int = 60
    send_rate: int = 20
    max_catchup: int = 5
    max_frame: int = 4096  # largest inbound message; inputs are ~40 bytes
    write_limit: int = 64 * 1024  # a client's backlog above this skips its snapshot
    slow_strikes: int = 40  # consecutive skipped snapshots before a client is dropped (2 s at 20 Hz)
    max_offences: int = 5
    input_rate: float = 120.0  # inbound messages per second per connection (token bucket)
    input_burst: float = 60.0
    handshake_timeout: float = 5.0  # upgrade → hello (the session's deadline)
    upgrade_timeout: float = 5.0  # TCP accept → a complete HTTP upgrade request
    max_request_bytes: int = 8192  # HTTP request head before the upgrade
    max_headers: int = 32
    max_connections: int = 4096  # open connections, every phase
    max_unauth: int = 1024  # connections not yet playing (HTTP, upgrade, hello), every address
    max_backlog: int = 256 * 1024  # a connection's write buffer beyond this: dropped (docs/security.md)
    account_conflict: str = "takeover"  # a second hello of a playing account: "takeover" or "refuse"
    idle_timeout: float = 20.0  # no bytes from a client for this long: it is gone
    ping_interval: float = 5.0
    replication: str = "delta"  # "delta": AOI + quantized deltas (docs/replication.md); "full": raw world
    aoi_radius: float | None = None  # None: the game's default view radius; 0: the whole world
    snapshot_budget: int = 1400  # max bytes of one client's delta snapshot body (0: unlimited)
    game_config: Mapping[str, object] = field(default_factory=dict)
    fairplay: FairPlayConfig = field(default_factory=FairPlayConfig)  # docs/fairplay.md
    admin_port: int | None = None  # the admin API's port (None: off; 0: any free port)
    admin_host: str = "127.0.0.1"
    metrics_on_game_port: bool = False  # /metrics on the public game port too (default: admin listener only)
    ship: ShipConfig = field(default_factory=ShipConfig)  # relocation through PostgreSQL (docs/relocation.md)
    drain_timeout: float = 10.0  # at shutdown, how long PostgreSQL may take to receive the final journal
    hub_url: str = ""  # the hub the /play page logs in through ("" = guests and pasted tokens)
    watch_public: bool = False  # /watch without an admin token (docs/web.md)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)  # docs/webrtc.md; workers=0: off


class GameServer:
    """Implements netcode.ws_server.ConnectionHandler for one campaign."""

    def __init__(
        self, cfg: ServerConfig, campaign: Campaign | None = None, verifier: TokenVerifier | None = None
    ) -> None:
        self.cfg = cfg
        # None: no join tokens (a hello's name is the player's account); see docs/auth.md.
        self.verifier = verifier
        config = {"tick_rate": cfg.tick_rate, **dict(cfg.game_config)}
        self.journal: Journal | None = None
        self.recovery: RecoveryReport | None = None
        if campaign is None and cfg.data_dir:
            campaign, store, self.recovery = open_campaign(
                cfg.data_dir, cfg.campaign, cfg.game, cfg.seed, config,
                tick_rate=cfg.tick_rate, durability=cfg.durability, commit_delay=cfg.store_commit_delay,
            )  # fmt: skip
            self.journal = Journal(
                campaign, store, snapshot_every=int(cfg.snapshot_every_s * cfg.tick_rate), hash_every=cfg.hash_every
            )
            r = self.recovery
            if not r.created:
                log.info(
                    "recovered campaign %s: snapshot at tick %d + %d journal ticks (%d hashes verified) in %.2f s%s",
                    cfg.campaign, r.snapshot_tick, r.replayed_ticks, r.hashes_checked, r.seconds,
                    f"; truncated: {r.truncated}" if r.truncated else "",
                )  # fmt: skip
        self.campaign = campaign or Campaign(cfg.game, cfg.seed, config, cfg.campaign)
        game = self.campaign.game
        self._spec = game.wire_spec()  # the welcome's "spec" and "world", made once
        self._world_constants = game.welcome_constants()
        self._lag = game.max_rewind > 0  # lag compensation: measure every player's RTT
        self.progress: ProgressSync | None = None
        self._overflow: SqliteOverflow | None = None
        if cfg.pg_dsn:
            if cfg.data_dir:
                # Rows that do not fit the write-behind buffer during an outage wait on disk.
                self._overflow = SqliteOverflow(Path(cfg.data_dir) / cfg.campaign / "pg_overflow.sqlite")
            self.progress = ProgressSync(PgWriteBehind(cfg.pg_dsn, overflow=self._overflow), self.campaign)
            self.progress.prime()
        # Shipping must be wired before the first tick (it may gate acknowledgements).
        self.shipper: Shipper | None = None
        if cfg.pg_dsn and self.journal is not None and cfg.ship.enabled:
            self.shipper = Shipper(cfg.pg_dsn, cfg.campaign, self.journal, cfg.ship)
        self._tasks: set[asyncio.Task[None]] = set()
        self.fairplay = ServerFairPlay(self, cfg.fairplay, open_store(cfg.data_dir, cfg.campaign, cfg.pg_dsn))
        self.admin: AdminServer | None = None
        self.agones: AgonesLink | None = None
        # Join-token ids survive a restart (engine/security/token_replay.py); "" = in-memory campaign.
        self._replay_file = Path(cfg.data_dir) / cfg.campaign / token_replay.FILE_NAME if cfg.data_dir else None
        self._replay_dirty = False
        self.stats = TickStats()
        self.sender = SnapshotSender(cfg, self.campaign, self.journal, self.stats)
        self.clients: dict[WsServerConnection, Client] = {}
        self.by_eid: dict[int, Client] = {}
        # The one connection each account holds: a hello, a progress load in flight, or a ship.
        self.by_account: dict[str, Client] = {}
        self.door = Door(self)
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._accepting = False
        self._ticker = FixedStep(cfg.tick_rate, cfg.max_catchup)
        # One sub-send per staggered send group (engine/snapshots.py): send_rate × groups per second.
        groups = self.sender.groups
        self._sender = FixedStep(cfg.send_rate * groups, groups)
        self._subsend = 0
        self._started_wall = time.time()
        self._proc = psutil.Process()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = cfg.port
        self.spectators = Spectators(self)
        self.web = WebRoutes.for_server(self)
        self.rtc = WebRtcRelay(self, cfg.webrtc) if cfg.webrtc.workers > 0 else None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.campaign.game.warmup()  # compile/load every kernel before the first player
        self.sender.warmup()
        await self.fairplay.referee.start()
        if self.verifier is not None and self._replay_file is not None:
            n = token_replay.load(self._replay_file, self.verifier.replay, time.time())
            if n:
                log.info("%d join tokens still live from before the restart stay used", n)
        process_metrics().campaigns.add(self)
        if self.cfg.admin_port is not None:
            self.admin = await start_admin(AdminAdapter(self.fairplay), self.verifier, self.cfg.admin_host,
                                           self.cfg.admin_port, open_get={"/metrics": metrics_handler})  # fmt: skip
            log.info("admin API on %s", self.admin.url)
        if self.progress is not None:
            await self.progress.pg.start()  # returns at once; connects and migrates in the background
        if self.journal is not None:
            journal = self.journal

            def committed(tick: int) -> None:  # runs on the store's writer thread
                with contextlib.suppress(RuntimeError):  # the loop may be closing
                    loop.call_soon_threadsafe(journal.on_commit, tick)

            journal.store.on_commit = committed
        if self.shipper is not None:
            self.shipper.start()  # returns at once; records wait on disk while PostgreSQL is away
        if self.rtc is not None:
            await self.rtc.start()
        cfg = self.cfg
        self.door.raise_fd_limit()
        # A hello may carry a 4 KiB token (with WebRTC, an offer may be larger still).
        frame = max(cfg.max_frame, MAX_HELLO_FRAME, self._signal_frame)
        limits = DoorLimits(
            max_size=frame, max_message=frame, max_request_bytes=cfg.max_request_bytes,
            max_headers=cfg.max_headers, pause_reading_at=cfg.write_limit, max_backlog=cfg.max_backlog,
        )  # fmt: skip
        self._server = await self._loop.create_server(
            connection_factory(self, limits, loop.time),
            self.cfg.host,
            self.cfg.port,
            backlog=2048,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self._accepting = True
        self.agones = await link_server(self)  # None unless running under Agones
        if self.verifier is None:
            log.warning("join tokens are off (no ARBITER_JWT_SECRET/KEYS/KEYFILE): any hello may play")
        log.info(
            "campaign %s (%s, seed %d) listening on ws://%s:%d/",
            self.cfg.campaign,
            self.cfg.game,
            self.cfg.seed,
            self.cfg.host,
            self.port,
        )

    async def run(self) -> None:
        """Tick until `request_stop()`; then shut down gracefully."""
        if self._server is None:
            await self.start()
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            await self._tick_loop()
        finally:
            housekeeping.cancel()
            await self._shutdown()

    def request_stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

    async def _shutdown(self) -> None:
        """Drain: stop accepting, seal the campaign (final snapshot, locally and to PostgreSQL), then
        tell players to reconnect (`bye` "relocate") while their ships are still in that snapshot."""
        self._accepting = False
        self.spectators.stop()
        if self._server is not None:
            self._server.close()
        sealed = await self._seal()
        for client in list(self.clients.values()):
            client.session.send_bye(BYE_RELOCATE if sealed else "server shutting down", CloseCode.GOING_AWAY)
            flush_session(client)
            client.conn.close(CloseCode.GOING_AWAY, "server shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for client in list(self.clients.values()):
            client.conn.abort()
        if self.rtc is not None:
            await self.rtc.close()
        if self.progress is not None:
            self.progress.save()
            if not await self.progress.pg.stop(5.0):
                log.error("PostgreSQL write-behind did not flush everything at shutdown: %s", self.progress.pg.stats())
            if self._overflow is not None:
                self._overflow.close()
        await self._save_replay_cache()
        if self.admin is not None:
            await self.admin.close()
        await self.fairplay.referee.close()
        process_metrics().campaigns.remove(self)
        if self.agones is not None:
            await self.agones.stop()  # the drain is done: Agones may now delete the pod
        self._stopped.set()
        log.info("campaign %s stopped at tick %d", self.cfg.campaign, self.campaign.tick_count)

    async def _seal(self) -> bool:
        """Final snapshot and flush (the tick has stopped, so a blocking wait in a thread is fine),
        then the journal's tail and that snapshot to PostgreSQL. True when the campaign is durable."""
        if self.journal is None:
            return False
        if not await asyncio.to_thread(self.journal.close):
            log.error("campaign store did not flush completely at shutdown")
        if self.shipper is not None and await self.shipper.drain(self.cfg.drain_timeout):
            log.info("campaign %s sealed in PostgreSQL at tick %d", self.cfg.campaign, self.shipper.shipped_tick)
        return True

    # -- the tick ---------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._ticker.start(now)
        self._sender.start(now)
        stats = self.stats
        perf = time.perf_counter
        while not self._stopping.is_set():
            now = loop.time()
            for _ in range(self._ticker.due(now)):
                t0 = perf()
                stats.tick_starts.add(loop.time())
                self._step()
                stats.tick_dur.add(perf() - t0)
            # Every due sub-send runs, even late (up to one round of groups): a sub-send skipped
            # here would be a snapshot lost for a whole group of clients.
            for _ in range(self._sender.due(loop.time())):
                t0 = perf()
                self.sender.send(list(self.clients.values()), self._subsend % self.sender.groups)
                self._subsend += 1
                stats.send_dur.add(perf() - t0)
            wake = min(self._ticker.next_deadline(), self._sender.next_deadline())
            delay = wake - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            else:
                await asyncio.sleep(0)  # let inputs in even when behind

    async def _save_replay_cache(self) -> None:
        if self.verifier is None or self._replay_file is None or not self._replay_dirty:
            return
        self._replay_dirty = False
        entries = self.verifier.replay.export(time.time())
        try:
            await asyncio.to_thread(token_replay.save, self._replay_file, entries)
        except OSError as exc:
            log.error("join-token replay cache not saved: %s", exc)

    def now(self) -> float:
        """The server's clock (the loop's monotonic time)."""
        return (self._loop or asyncio.get_running_loop()).time()

    def _step(self) -> None:
        result = self.campaign.tick()
        if result.violations:
            self.fairplay.on_tick(result.violations, result.tick)
        if self.progress is not None:
            self.progress.on_tick(result)
        stats = self.stats
        stats.ticks += 1
        stats.inputs_accepted += result.accepted
        stats.inputs_refused += result.refused
        for eid, evs in result.events.items():
            client = self.by_eid.get(eid)
            if client is not None:
                client.pending_events.extend(evs)

    # -- housekeeping (off the tick: time-outs and keepalive) -------------------------------------
    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        reap_at = loop.time() + cfg.orphan_grace if self.campaign.offline_ships() else None
        save_at = loop.time() + cfg.progress_every_s
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            if self.progress is not None and now >= save_at:
                save_at = now + cfg.progress_every_s
                self.progress.save()
            if self._replay_dirty:
                await self._save_replay_cache()
            self.door.deadlines(now)
            if reap_at is not None and now >= reap_at:
                reap_at = None
                orphans = self.campaign.offline_ships()
                for eid in orphans:
                    self.campaign.leave(eid)
                if orphans:
                    log.info("%d ships whose players did not come back after recovery left the world", len(orphans))
            for client in list(self.clients.values()):
                conn = client.conn
                if self._lag and client.eid >= 0 and now - client.latency.ping_at >= PING_INTERVAL_S:
                    self._ping(client, now)
                rx = conn.bytes_in
                if rx != client.last_rx_count:
                    client.last_rx_count = rx
                    client.last_rx_time = now
                session = client.session
                session.poll(now)  # the session owns the handshake time-out
                if session.close_code == CloseCode.HANDSHAKE_TIMEOUT and conn.is_open:
                    self.fairplay.handshake_timeout(client)
                if session.close_code is not None and conn.is_open:
                    flush_session(client)
                    conn.close(session.close_code, session.close_reason)
                elif now - client.last_rx_time > cfg.idle_timeout:
                    conn.abort()
                elif now - client.last_rx_time > cfg.ping_interval:
                    conn.ping()

    # -- ConnectionHandler ------------------------------------------------------------------------
    def on_connect(self, conn: WsServerConnection) -> bool:
        return self.door.accept(conn, self.now())

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        self.door.error(conn, cause, exc, self.now())

    def http_request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> HttpAnswer | None:
        route = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        if route == "/health":
            ok = self._accepting and not self._stopping.is_set()
            body = {"status": "ok" if ok else "stopping", "tick": self.campaign.tick_count}
            return (200 if ok else 503), "application/json", json.dumps(body).encode()
        if route == "/stats":
            return 200, "application/json", json.dumps(self.door.public_stats()).encode()
        if route == "/stats/full":
            return self._full_stats((headers or {}).get("authorization"))
        if route == "/info":
            return info_response(self.cfg.game, self.cfg.campaign, self.cfg.tick_rate, self.cfg.send_rate)
        if route == "/metrics" and self.cfg.metrics_on_game_port:
            text, ctype = process_metrics().exposition()
            return 200, ctype, text
        if route in ("/", "/ws"):
            return None if self._accepting else (503, "text/plain", b"shutting down\n")
        return self.web.answer(path)

    def _full_stats(self, authorization: str | None) -> HttpAnswer:
        """Every figure, for an admin-role bearer token (like the admin API; never open without keys)."""
        if self.verifier is None:
            return 401, "text/plain", b"needs join-token keys on the server and an admin token\n"
        try:
            bearer_claims(authorization, self.verifier, role="admin")
        except AuthError as e:
            self.door.log.event(self.now(), logging.INFO, "http: /stats/full refused", e.code.name)
            return e.http_status, "text/plain", (e.public_message + "\n").encode()
        return 200, "application/json", json.dumps(self.stats_dict()).encode()

    def on_open(self, conn: WsServerConnection) -> None:
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        if self.fairplay.refuse_banned_address(conn):
            return
        session = ServerSession(
            max_offences=self.cfg.max_offences,
            max_frame=self.cfg.max_frame,
            rate=self.cfg.input_rate,
            burst=self.cfg.input_burst,
            handshake_timeout=self.cfg.handshake_timeout,
            opened_at=now,
            max_signal_frame=self._signal_frame,
            inputs=self.campaign.game.inputs,
        )
        client = Client(conn, session, now, last_rx_time=now, ip=peer_ip(conn))
        if self.fairplay.timing:
            client.timing = TimingStats()
        self.clients[conn] = client
        if self._lag:
            self._ping(client, now)  # an RTT sample before the first input, if the client answers

    def _ping(self, client: Client, now: float) -> None:
        lat = client.latency
        lat.ping_id = (lat.ping_id + 1) & 0xFFFFFFFF
        lat.ping_at = now
        lat.waiting = True
        client.conn.ping(lat.ping_id.to_bytes(4, "big"))

    def on_pong(self, conn: WsServerConnection, payload: bytes) -> None:
        """A WebSocket pong: an RTT sample when it answers the newest ping (engine/latency.py)."""
        client = self.clients.get(conn)
        if client is None or not self._lag:
            return
        lat = client.latency
        if not lat.waiting or len(payload) != 4 or int.from_bytes(payload, "big") != lat.ping_id:
            return  # unsolicited, stale or repeated: no sample
        now = (self._loop or asyncio.get_running_loop()).time()
        lat.waiting = False
        lat.sample(now - lat.ping_at)
        game, cfg = self.campaign.game, self.cfg
        lat.bound = rewind_bound(lat, cfg.tick_rate, cfg.send_rate, game.max_rewind)

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None:
        client = self.clients.get(conn)
        if client is None:
            return
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        session = client.session
        errors_before = session.offences
        for ev in session.receive(payload if not is_text else payload.decode("utf-8", "replace"), now):
            if type(ev) is InputEvent:
                if client.spectator:
                    continue  # a spectator's inputs only carry its snapshot acks
                if not self.campaign.submit(client.eid, ev.seq, ev.client_tick, ev.values, client.latency.bound):
                    self.stats.inputs_dropped += 1
                if client.timing is not None:
                    self.fairplay.input_arrived(client, now)
            elif type(ev) is HelloEvent:
                self._hello(client, ev)
            elif type(ev) is PingEvent:
                session.pong(ev.client_time, now * 1000.0, self.campaign.tick_count)
            elif isinstance(ev, SIGNAL_EVENTS):  # WebRTC (netcode/signaling.py, engine/webrtc/relay.py)
                if self.rtc is not None:
                    self.rtc.signal(client, ev)
                else:
                    session.notify(ErrorCode.RTC_UNAVAILABLE, "this server runs no WebRTC relay workers")
        if session.offences != errors_before:
            self.stats.protocol_errors += session.offences - errors_before
            self.fairplay.offence(client)
        flush_session(client)
        if session.close_code is not None:
            conn.close(int(session.close_code), session.close_reason or "")

    def on_close(self, conn: WsServerConnection) -> None:
        admitted = self.door.closed(conn)
        client = self.clients.pop(conn, None)
        self.fairplay.connection_closed(peer_ip(conn), admitted, client)
        if client is None:
            return
        self.stats.connection_closed(conn.bytes_in, conn.bytes_out, client.session.dropped)
        self.sender.remove(client)
        if self.by_account.get(client.account) is client:
            del self.by_account[client.account]
        if self.rtc is not None:
            self.rtc.drop(client)
        if client.eid >= 0:
            self.by_eid.pop(client.eid, None)
            if self.progress is not None:
                self.progress.save([client.eid])
                self.progress.forget(client.eid)
            self.campaign.leave(client.eid)
            self.stats.leaves += 1

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def _signal_frame(self) -> int:
        return MAX_SIGNAL_FRAME if self.rtc is not None else 0

    def _hello(self, client: Client, ev: HelloEvent) -> None:
        if ev.watch:
            self.spectators.admit(client, ev)
            return
        if not self._accepting:
            client.session.reject(ErrorCode.SERVER_FULL, "server shutting down", CloseCode.GOING_AWAY)
            return
        name, account = ev.name, ev.name
        if self.verifier is not None:
            try:
                claims = self.verifier.verify(ev.token)
            except AuthError as e:
                self.door.log.event(self.now(), logging.INFO, f"hello refused: {e.code.name}",
                                    f"{client.conn.peer} {e.detail}")  # fmt: skip
                self.stats.auth_refusals += 1
                client.session.reject(int(e.code), e.public_message, CloseCode.UNAUTHORIZED)
                self.fairplay.token_refused(client, e.code)
                return
            account, name = claims.account, claims.name or ev.name
            self._replay_dirty = True
        if self.fairplay.refuse_banned(client, account):
            return
        # One account, one connection, one ship: hellos of an account are serialized here, on the
        # loop, and a progress load in flight belongs to the account, not to a connection.
        holder = self.by_account.get(account)
        if holder is not None:
            if self.cfg.account_conflict == "refuse":
                client.session.reject(ErrorCode.ACCOUNT_IN_USE, "this account is already connected",
                                      CloseCode.ACCOUNT_IN_USE)  # fmt: skip
                return
            self._take_over(holder, client, name)
            return
        if self.campaign.full and account not in self.campaign.accounts:
            client.session.reject(ErrorCode.SERVER_FULL, "campaign is full", CloseCode.SERVER_FULL)
            return
        client.account, client.name = account, name
        self.by_account[account] = client
        if self.progress is not None and account not in self.campaign.accounts:
            # A new ship for this account: fetch its durable progress first, off the tick.
            task = asyncio.get_running_loop().create_task(self._admit_with_progress(account))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._admit(client, None)

    def _take_over(self, old: Client, new: Client, name: str) -> None:
        """A newer connection of `old.account` replaces `old`: the ship, if there is one, carries
        over as it is (no leave, no join, no second restore); else the load in flight admits `new`."""
        account = old.account
        new.account, new.name = account, name
        self.by_account[account] = new
        eid = old.eid
        old.eid = -1  # its on_close leaves the ship alone
        old.session.send_bye("replaced by a newer connection of this account", CloseCode.REPLACED)
        flush_session(old)
        old.conn.close(int(CloseCode.REPLACED), "replaced by a newer connection")
        if eid < 0:
            return
        self.sender.remove(old)
        self.campaign.players[eid] = name
        self._seat(new, eid)
        log.info("%s: a new connection took ship %d over", account, eid)

    async def _admit_with_progress(self, account: str) -> None:
        assert self.progress is not None
        restore = None
        failed = False
        try:
            restore = await self.progress.pg.load_progress(account, self.cfg.campaign, timeout=2.0)
        except Exception as exc:
            failed = True
            self.door.log.event(self.now(), logging.WARNING, "progress not loaded", f"{account}: {exc}")
        client = self.by_account.get(account)  # the newest connection of the account, if any
        if client is None or client.eid >= 0:
            return
        if client.conn.is_open and client.session.state is SessionState.AWAIT_HELLO:
            if self.campaign.full:
                client.session.reject(ErrorCode.SERVER_FULL, "campaign is full", CloseCode.SERVER_FULL)
            else:
                self._admit(client, restore)
                if failed and self.progress is not None:
                    # A fresh ship: saving it would overwrite the progress PostgreSQL holds.
                    self.progress.unsaved.add(client.eid)
            flush_session(client)
            if client.session.close_code is not None:
                client.conn.close(int(client.session.close_code), client.session.close_reason or "")
        if client.eid < 0 and self.by_account.get(account) is client:
            del self.by_account[account]

    def _admit(self, client: Client, restore: dict[str, Any] | None) -> None:
        campaign = self.campaign
        account, name = client.account, client.name
        eid, resumed = campaign.join(name, account, restorable(restore, campaign.game.durable))
        if self.progress is not None:
            self.progress.joined(eid, account, name)
        if resumed:
            log.info("%s resumed entity %d", account, eid)
        self.stats.joins += 1
        self._seat(client, eid)

    def _seat(self, client: Client, eid: int) -> None:
        """`client` now plays ship `eid`: the welcome, then snapshots. Like a client coming back
        after a relocation, it keeps counting input seqs from where the ship's were (protocol.md)."""
        client.eid = eid
        self.sender.add(client)
        self.by_eid[eid] = client
        self.welcome(client, eid, self.sender.rep_wire)

    def welcome(self, client: Client, player: int, rep: dict[str, object] | None) -> None:
        """Send the welcome: `player` is the client's entity (0 for a spectator). The connection
        leaves the unauthenticated phase (docs/security.md)."""
        if self.door.admitted(client.conn):
            self.fairplay.connection_admitted(client.ip)
        game = self.campaign.game
        client.session.accept(
            player=player,
            tick=self.campaign.tick_count,
            tick_rate=self.cfg.tick_rate,
            send_rate=self.cfg.send_rate,
            game=game.name,
            world=self._world_constants,
            dtype=dtype_to_wire(game.record_dtype),
            rep=rep,
            spec=self._spec,
        )

    def stats_dict(self) -> dict[str, Any]:
        """Every figure (/stats/full, /metrics)."""
        return self.door.full_stats()


def restorable(progress: dict[str, Any] | None, durable: tuple[str, ...] = ()) -> dict[str, object] | None:
    """The part of a stored progress row a returning ship takes over: the game's resources and
    durable fields (`Game.durable`), and where it was and how it moved (docs/security.md,
    "Reconnecting")."""
    if not progress:
        return None
    out: dict[str, object] = {k: progress[k] for k in ("resources", *durable) if k in progress}
    pos = [progress.get(k) for k in ("last_x", "last_y", "last_vx", "last_vy")]
    if pos[0] is not None and pos[1] is not None:
        out["pos"] = [float(v or 0.0) for v in pos]
    return out


async def open_server(cfg: ServerConfig, verifier: TokenVerifier | None = None) -> GameServer:
    """A GameServer for `cfg`; with PostgreSQL, the campaign is first restored from there when this
    machine has no current copy of it (engine/relocation.py). Raises RestoreError when it cannot tell."""
    if cfg.pg_dsn and cfg.data_dir and cfg.ship.enabled:
        await restore_from_pg(cfg.pg_dsn, cfg.data_dir, cfg.campaign, cfg.ship)
    return GameServer(cfg, verifier=verifier)


async def serve(cfg: ServerConfig) -> GameServer:
    server = await open_server(cfg)
    await server.start()
    server.install_signal_handlers()
    await server.run()
    return server
