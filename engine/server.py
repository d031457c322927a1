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
import os
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
from engine.journal import Journal
from engine.metrics import metrics_handler, process_metrics
from engine.progress import ProgressSync
from engine.recovery import RecoveryReport, open_campaign
from engine.relocation import ShipConfig, Shipper, restore_from_pg
from engine.security import token_replay
from engine.security.admin import AdminServer, start_admin
from engine.security.auth import AuthError, TokenVerifier
from engine.security.fairplay.referee import FairPlayConfig
from engine.security.fairplay.server_hooks import AdminAdapter, ServerFairPlay, open_store, peer_ip
from engine.security.fairplay.signals import TimingStats
from engine.snapshots import SnapshotSender
from engine.spectate import Spectators
from engine.stats import TickStats
from engine.ticker import FixedStep
from engine.web_routes import WebRoutes
from netcode.protocol import (
    BYE_RELOCATE,
    MAX_HELLO_FRAME,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
    dtype_to_wire,
)
from netcode.session import HelloEvent, InputEvent, PingEvent, ServerSession, SessionState
from netcode.ws_server import HttpAnswer, WsServerConnection, connection_factory
from persistence.pg_overflow import SqliteOverflow
from persistence.pg_writer import PgWriteBehind

log = logging.getLogger("arbiter.server")


@dataclass(slots=True)
class ServerConfig:
    game: str = "startales"
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
    handshake_timeout: float = 5.0
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
        self._server = await self._loop.create_server(
            # A hello may carry a 4 KiB token, so the transport's frame limit is the hello's.
            connection_factory(self, max(self.cfg.max_frame, MAX_HELLO_FRAME)),
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
            if reap_at is not None and now >= reap_at:
                reap_at = None
                orphans = self.campaign.offline_ships()
                for eid in orphans:
                    self.campaign.leave(eid)
                if orphans:
                    log.info("%d ships whose players did not come back after recovery left the world", len(orphans))
            for client in list(self.clients.values()):
                conn = client.conn
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
    def http_request(self, path: str) -> HttpAnswer | None:
        route = path.split("?", 1)[0]
        if route == "/health":
            ok = self._accepting and not self._stopping.is_set()
            body = {"status": "ok" if ok else "stopping", "tick": self.campaign.tick_count}
            return (200 if ok else 503), "application/json", json.dumps(body).encode()
        if route == "/stats":
            return 200, "application/json", json.dumps(self.stats_dict()).encode()
        if route == "/metrics" and self.cfg.metrics_on_game_port:
            text, ctype = process_metrics().exposition()
            return 200, ctype, text
        if route in ("/", "/ws"):
            return None if self._accepting else (503, "text/plain", b"shutting down\n")
        return self.web.answer(path)

    def on_open(self, conn: WsServerConnection) -> None:
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        if not self.fairplay.admit_connection(conn):  # banned address or a connection flood
            return
        session = ServerSession(
            max_offences=self.cfg.max_offences,
            max_frame=self.cfg.max_frame,
            rate=self.cfg.input_rate,
            burst=self.cfg.input_burst,
            handshake_timeout=self.cfg.handshake_timeout,
            opened_at=now,
        )
        client = Client(conn, session, now, last_rx_time=now, ip=peer_ip(conn))
        if self.fairplay.timing:
            client.timing = TimingStats()
        self.clients[conn] = client

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
                if not self.campaign.submit(
                    client.eid, ev.seq, ev.client_tick, ev.dx, ev.dy, ev.action, ev.arg, ev.arg2, ev.arg3, ev.txn
                ):
                    self.stats.inputs_dropped += 1
                if client.timing is not None:
                    self.fairplay.input_arrived(client, now)
            elif type(ev) is HelloEvent:
                self._hello(client, ev)
            elif type(ev) is PingEvent:
                session.pong(ev.client_time, now * 1000.0, self.campaign.tick_count)
        if session.offences != errors_before:
            self.stats.protocol_errors += session.offences - errors_before
            self.fairplay.offence(client)
        flush_session(client)
        if session.close_code is not None:
            conn.close(int(session.close_code), session.close_reason or "")

    def on_close(self, conn: WsServerConnection) -> None:
        client = self.clients.pop(conn, None)
        if client is None:
            return
        self.fairplay.connection_closed(client)
        self.stats.connection_closed(conn.bytes_in, conn.bytes_out, client.session.dropped)
        self.sender.remove(client)
        if client.eid >= 0:
            self.by_eid.pop(client.eid, None)
            if self.progress is not None:
                self.progress.save([client.eid])
                self.progress.forget(client.eid)
            self.campaign.leave(client.eid)
            self.stats.leaves += 1

    # -- helpers ----------------------------------------------------------------------------------
    def _hello(self, client: Client, ev: HelloEvent) -> None:
        if ev.watch:
            self.spectators.admit(client, ev)
            return
        if not self._accepting or self.campaign.full:
            client.session.reject(ErrorCode.SERVER_FULL, "campaign is full", CloseCode.SERVER_FULL)
            return
        name, account = ev.name, ev.name
        if self.verifier is not None:
            try:
                claims = self.verifier.verify(ev.token)
            except AuthError as e:
                log.info("hello refused from %s: %s %s", client.conn.peer, e.code.name, e.detail)
                self.stats.auth_refusals += 1
                client.session.reject(int(e.code), e.public_message, CloseCode.UNAUTHORIZED)
                self.fairplay.token_refused(client, e.code)
                return
            account, name = claims.account, claims.name or ev.name
            self._replay_dirty = True
        if self.fairplay.refuse_banned(client, account):
            return
        client.account = account
        if self.progress is not None and account not in self.campaign.accounts:
            # A new ship for this account: fetch its durable progress first, off the tick.
            task = asyncio.get_running_loop().create_task(self._admit_with_progress(client, name, account))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._admit(client, name, account, None)

    async def _admit_with_progress(self, client: Client, name: str, account: str) -> None:
        assert self.progress is not None
        restore = None
        try:
            restore = await self.progress.pg.load_progress(account, self.cfg.campaign, timeout=2.0)
        except Exception as exc:  # PostgreSQL down: play on with a fresh ship, say so loudly
            log.warning("progress of %s not loaded (%s): joining with a fresh ship", account, exc)
        if client.conn.is_open and client.session.state is SessionState.AWAIT_HELLO:
            if self.campaign.full:
                client.session.reject(ErrorCode.SERVER_FULL, "campaign is full", CloseCode.SERVER_FULL)
            else:
                self._admit(client, name, account, restore)
            flush_session(client)
            if client.session.close_code is not None:
                client.conn.close(int(client.session.close_code), client.session.close_reason or "")

    def _admit(self, client: Client, name: str, account: str, restore: dict[str, Any] | None) -> None:
        campaign = self.campaign
        eid, resumed = campaign.join(name, account, _restorable(restore))
        if self.progress is not None:
            self.progress.joined(eid, account, name)
        if resumed:
            log.info("%s resumed entity %d", account, eid)
        client.eid = eid
        client.name = name
        self.sender.add(client)
        self.by_eid[eid] = client
        self.stats.joins += 1
        self.welcome(client, eid, self.sender.rep_wire)

    def welcome(self, client: Client, player: int, rep: dict[str, object] | None) -> None:
        """Send the welcome: `player` is the client's entity (0 for a spectator)."""
        game = self.campaign.game
        client.session.accept(
            player=player,
            tick=self.campaign.tick_count,
            tick_rate=self.cfg.tick_rate,
            send_rate=self.cfg.send_rate,
            game=game.name,
            world=game.constants(),
            dtype=dtype_to_wire(game.record_dtype),
            rep=rep,
        )

    def stats_dict(self) -> dict[str, Any]:
        d = self.stats.as_dict()
        with self._proc.oneshot():
            cpu = self._proc.cpu_times()
            rss = self._proc.memory_info().rss
        d.update(
            {
                "protocol_version": PROTOCOL_VERSION,
                "game": self.cfg.game,
                "campaign": self.cfg.campaign,
                "tick": self.campaign.tick_count,
                "tick_rate": self.cfg.tick_rate,
                "send_rate": self.cfg.send_rate,
                "ccu": len(self.by_eid),
                "connections": len(self.clients),
                "overruns": self._ticker.late_ticks,
                "dropped_ticks": self._ticker.dropped_ticks,
                "uptime_s": round(time.time() - self._started_wall, 3),
                "cpu_s": round(cpu.user + cpu.system, 3),
                "rss_mb": round(rss / 2**20, 1),
                "pid": os.getpid(),
            }
        )
        d["fairplay"] = self.fairplay.referee.stats()
        if self.progress is not None:
            d["pg"] = {k: v for k, v in self.progress.pg.stats().items() if isinstance(v, int | float | str | bool)}
            d["pg"]["ledger_rows"] = self.progress.ledger_rows
        if self.shipper is not None:
            d["ship"] = self.shipper.stats()
        j = self.journal
        if j is not None:
            st = j.store
            d.update(
                {
                    "durable_tick": j.durable_tick,
                    "journal_backlog": j.backlog,
                    "store_queue_depth": st.queue_depth,
                    "store_last_commit_ms": round(st.last_commit_ms, 3),
                    "store_bytes_written": st.bytes_written,
                    "store_write_errors": st.write_errors,
                    "snapshots_taken": j.snapshots_taken,
                }
            )
        return d


def _restorable(progress: dict[str, Any] | None) -> dict[str, object] | None:
    """The part of a stored progress row a fresh ship takes over (positions are not restored)."""
    if not progress:
        return None
    return {k: progress[k] for k in ("resources", "buildings", "achievements", "txn_last") if k in progress}


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
