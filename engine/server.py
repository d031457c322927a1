"""One campaign's runtime: its world, journal, sessions, fair play and stats, ticked by a host.

A `GameServer` holds everything that belongs to one campaign and nothing that belongs to the
process: the listening port, the door, the admin API, the tick scheduler, Agones and the WebRTC
relay workers are the host's (engine/host.py), and so are the SQLite writer thread, the PostgreSQL
pool and the web files (engine/shared.py). `arbiter host` runs many; `arbiter serve` is a host with
exactly one (`GameServer.start()` makes it), so both run the same code.

The tick path (inputs filed → sim step → events routed → snapshots written) never awaits: every
socket write is a synchronous, bounded `send_parts` that drops a superseded snapshot for a client
whose backlog is over the bound, and disconnects a client that stays backlogged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from engine.admission import Admission
from engine.campaign import Campaign
from engine.clients import Client, flush_session
from engine.config import ServerConfig
from engine.info import info_response
from engine.journal import Journal
from engine.latency import PING_INTERVAL_S, rewind_bound
from engine.metrics import process_metrics
from engine.progress import ProgressSync
from engine.recovery import RecoveryReport, open_campaign
from engine.relocation import Shipper, restore_from_pg
from engine.scheduler import Slot
from engine.security import token_replay
from engine.security.auth import AuthError, TokenVerifier
from engine.security.fairplay.server_hooks import ServerFairPlay, open_store, peer_ip
from engine.security.fairplay.signals import TimingStats
from engine.server_stats import full_stats, full_stats_answer, public_stats
from engine.shared import Shared
from engine.snapshots import SnapshotSender
from engine.spectate import Spectators
from engine.stats import TickStats
from engine.web_routes import WebRoutes
from netcode.protocol import BYE_RELOCATE, CloseCode, ErrorCode
from netcode.session import HelloEvent, InputEvent, PingEvent, ServerSession
from netcode.signaling import MAX_SIGNAL_FRAME, SIGNAL_EVENTS
from netcode.ws_server import HttpAnswer, WsServerConnection
from persistence.campaign_store import CampaignStore
from persistence.pg_overflow import SqliteOverflow
from persistence.pg_writer import PgWriteBehind

if TYPE_CHECKING:
    from engine.door import Door
    from engine.host import Host
    from engine.security.admin import AdminServer
    from engine.webrtc.relay import WebRtcRelay

log = logging.getLogger("arbiter.server")


Opened = tuple[Campaign, CampaignStore, RecoveryReport]


class GameServer:
    """One campaign (netcode.ws_server.ConnectionHandler for the connections that joined it)."""

    def __init__(
        self,
        cfg: ServerConfig,
        campaign: Campaign | None = None,
        verifier: TokenVerifier | None = None,
        *,
        shared: Shared | None = None,
        opened: Opened | None = None,
    ) -> None:
        """`opened`: the campaign already opened (or recovered) from its data dir, e.g. in a worker
        thread by a host waking it; `shared`: the process's shared parts (default: its own)."""
        self.cfg = cfg
        # None: no join tokens (a hello's name is the player's account); see docs/auth.md.
        self.verifier = verifier
        self.shared = shared or Shared(cfg)
        self.host: Host | None = None  # set when a host runs it (engine/host.py)
        self.slot: Slot[GameServer] | None = None  # its place in the host's tick schedule
        self.path_prefix = ""  # "/c/{campaign}" behind a host of many campaigns (its pages' URLs)
        config = {"tick_rate": cfg.tick_rate, **dict(cfg.game_config)}
        self.journal: Journal | None = None
        self.recovery: RecoveryReport | None = None
        if opened is None and campaign is None and cfg.data_dir:
            opened = open_campaign(
                cfg.data_dir, cfg.campaign, cfg.game, cfg.seed, config, tick_rate=cfg.tick_rate,
                durability=cfg.durability, commit_delay=cfg.store_commit_delay, writer_thread=self.shared.writer,
            )  # fmt: skip
        if opened is not None:
            campaign, store, self.recovery = opened
            self.journal = Journal(campaign, store, snapshot_every=int(cfg.snapshot_every_s * cfg.tick_rate),
                                   hash_every=cfg.hash_every, pool=self.shared.snapshot_pool)  # fmt: skip
            r = self.recovery
            if not r.created:
                log.info(
                    "recovered campaign %s: snapshot at tick %d + %d journal ticks (%d hashes verified) in %.2f s%s",
                    cfg.campaign, r.snapshot_tick, r.replayed_ticks, r.hashes_checked, r.seconds,
                    f"; truncated: {r.truncated}" if r.truncated else "",
                )  # fmt: skip
        self.campaign = campaign or Campaign(cfg.game, cfg.seed, config, cfg.campaign)
        game = self.campaign.game
        self.wire_spec = game.wire_spec()  # the welcome's "spec" and "world", made once
        self.world_constants = game.welcome_constants()
        self._lag = game.max_rewind > 0  # lag compensation: measure every player's RTT
        self.progress: ProgressSync | None = None
        self._overflow: SqliteOverflow | None = None
        pool = self.shared.pg
        if cfg.pg_dsn:
            if cfg.data_dir:
                # Rows that do not fit the write-behind buffer during an outage wait on disk.
                self._overflow = SqliteOverflow(Path(cfg.data_dir) / cfg.campaign / "pg_overflow.sqlite")
            writer = (PgWriteBehind(pool_factory=pool.get, run_migrations=False, overflow=self._overflow)
                      if pool is not None else PgWriteBehind(cfg.pg_dsn, overflow=self._overflow))  # fmt: skip
            self.progress = ProgressSync(writer, self.campaign)
            self.progress.prime()
        # Shipping must be wired before the first tick (it may gate acknowledgements).
        self.shipper: Shipper | None = None
        if cfg.pg_dsn and self.journal is not None and cfg.ship.enabled:
            self.shipper = Shipper(cfg.pg_dsn, cfg.campaign, self.journal, cfg.ship, pool=pool)
        self.tasks: set[asyncio.Task[None]] = set()
        fp_store = open_store(cfg.data_dir, cfg.campaign, cfg.pg_dsn, pool=pool,
                              writer=self.progress.pg if self.progress is not None else None,
                              writer_thread=self.shared.writer)  # fmt: skip
        self.fairplay = ServerFairPlay(self, cfg.fairplay, fp_store)
        # Join-token ids survive a restart (engine/security/token_replay.py); "" = in-memory campaign.
        self._replay_file = Path(cfg.data_dir) / cfg.campaign / token_replay.FILE_NAME if cfg.data_dir else None
        self.replay_dirty = False
        self._replay_task: asyncio.Task[None] | None = None
        self.stats = TickStats()
        self.sender = SnapshotSender(cfg, self.campaign, self.journal, self.stats)
        self.clients: dict[WsServerConnection, Client] = {}
        self.by_eid: dict[int, Client] = {}
        # The one connection each account holds: a hello, a progress load in flight, or a ship.
        self.by_account: dict[str, Client] = {}
        self.accepting = False  # takes hellos (off while it stops or hibernates)
        self._subsend = 0
        self.offline_ticks = 0  # ticks run when it woke, for the time it hibernated (Hibernation "advance")
        self.started_wall = time.time()
        self.proc = psutil.Process()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reap_at: float | None = None
        self._save_at = 0.0
        self.last_player_at = 0.0  # loop time: last moment a player was connected (hibernation)
        self.admission = Admission(self)
        self.spectators = Spectators(self)
        self.web = WebRoutes.for_server(self)

    # -- what the host provides -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.host.port if self.host is not None else self.cfg.port

    @property
    def door(self) -> Door:
        assert self.host is not None, "the server is not running"
        return self.host.door

    @property
    def admin(self) -> AdminServer | None:
        return self.host.admin if self.host is not None else None

    @property
    def rtc(self) -> WebRtcRelay | None:
        return self.host.rtc if self.host is not None else None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Serve this campaign alone on its own port (`arbiter serve`): a host of one campaign."""
        if self.host is None:
            from engine.host import Host

            host = Host.serving(self)
            await host.start()

    async def run(self) -> None:
        """Tick until `request_stop()`; then shut down gracefully."""
        if self.host is None:
            await self.start()
        assert self.host is not None
        await self.host.run()

    def request_stop(self) -> None:
        if self.host is not None:
            self.host.request_stop()

    def install_signal_handlers(self) -> None:
        if self.host is not None:
            self.host.install_signal_handlers()

    async def open(self) -> None:
        """Ready to tick and take players (called by the host that runs it)."""
        self._loop = loop = asyncio.get_running_loop()
        game = self.campaign.game
        if self.shared.warm(game, self.cfg.replication):
            game.warmup()  # compile/load every kernel before the first player (once per game and process)
        self.sender.warmup()
        await self.fairplay.referee.start()
        if self.verifier is not None and self._replay_file is not None:
            n = await asyncio.to_thread(token_replay.load, self._replay_file, self.verifier.replay, time.time())
            if n:
                log.info("%d join tokens still live from before the restart stay used", n)
        process_metrics().campaigns.add(self)
        if self.progress is not None:
            await self.progress.pg.start()  # returns at once; connects and migrates in the background
        if self.shipper is not None:
            self.shipper.start()  # returns at once; records wait on disk while PostgreSQL is away
        now = loop.time()
        self._reap_at = now + self.cfg.orphan_grace if self.campaign.offline_ships() else None
        self._save_at = now + self.cfg.progress_every_s
        self.last_player_at = now
        self.accepting = True

    async def close(self, *, relocate: bool = True, reason: str = "server shutting down") -> bool:
        """Stop this campaign (the host no longer ticks it): seal it (final snapshot, locally and to
        PostgreSQL), then tell its players to reconnect (`bye` "relocate", when `relocate` and it
        was sealed) while their ships are still in that snapshot. True when it was sealed."""
        self.accepting = False
        self.spectators.stop()
        sealed = await self._seal()
        for client in list(self.clients.values()):
            client.session.send_bye(BYE_RELOCATE if sealed and relocate else reason, CloseCode.GOING_AWAY)
            flush_session(client)
            client.conn.close(CloseCode.GOING_AWAY, reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for client in list(self.clients.values()):
            client.conn.abort()
        for task in list(self.tasks):
            task.cancel()
        await self.fairplay.referee.close()  # before the write-behind it may ride on stops
        if self.progress is not None:
            self.progress.save()
            if not await self.progress.pg.stop(5.0):
                log.error("PostgreSQL write-behind did not flush everything at shutdown: %s", self.progress.pg.stats())
            if self._overflow is not None:
                self._overflow.close()
        if self._replay_task is not None:
            await asyncio.gather(self._replay_task, return_exceptions=True)
        await self._save_replay_cache()
        process_metrics().campaigns.remove(self)
        log.info("campaign %s stopped at tick %d", self.cfg.campaign, self.campaign.tick_count)
        return sealed

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

    # -- the tick (called by the host's scheduler, engine/scheduler.py) ---------------------------
    def tick(self) -> None:
        stats = self.stats
        assert self._loop is not None
        stats.tick_starts.add(self._loop.time())
        t0 = time.perf_counter()
        self._step()
        stats.tick_dur.add(time.perf_counter() - t0)

    def sub_send(self) -> None:
        """One staggered sub-send (engine/snapshots.py): send_rate × groups per second."""
        group = self._subsend % self.sender.groups
        self._subsend += 1
        if not self.clients:
            return
        t0 = time.perf_counter()
        self.sender.send(list(self.clients.values()), group)
        self.stats.send_dur.add(time.perf_counter() - t0)

    def run_offline(self, ticks: int) -> None:
        """Run ticks with nobody connected (a world that goes on while hibernated, engine/host.py)."""
        for _ in range(ticks):
            self._step()
        self.offline_ticks += ticks

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

    async def _save_replay_cache(self) -> None:
        if self.verifier is None or self._replay_file is None or not self.replay_dirty:
            return
        self.replay_dirty = False
        entries = self.verifier.replay.export(time.time())
        try:
            await asyncio.to_thread(token_replay.save, self._replay_file, entries)
        except OSError as exc:
            log.error("join-token replay cache not saved: %s", exc)

    def now(self) -> float:
        """The server's clock (the loop's monotonic time)."""
        return (self._loop or asyncio.get_running_loop()).time()

    # -- housekeeping (off the tick: time-outs and keepalive; the host calls it twice a second) ----
    def housekeep(self, now: float) -> None:
        cfg = self.cfg
        if self.progress is not None and now >= self._save_at:
            self._save_at = now + cfg.progress_every_s
            self.progress.save()
        if self.replay_dirty and (self._replay_task is None or self._replay_task.done()):
            self._replay_task = asyncio.get_running_loop().create_task(self._save_replay_cache())
        if self._reap_at is not None and now >= self._reap_at:
            self._reap_at = None
            orphans = self.campaign.offline_ships()
            for eid in orphans:
                self.campaign.leave(eid)
            if orphans:
                log.info("%d ships whose players did not come back after recovery left the world", len(orphans))
        if self.by_eid:
            self.last_player_at = now
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

    # -- HTTP (the host routes /c/{campaign}/... here, or everything when it serves this one alone) -
    def http_request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> HttpAnswer | None:
        route = path.split("?", 1)[0]
        if route == "/health":
            ok = self.accepting and (self.host is None or self.host.accepting)
            body = {"status": "ok" if ok else "stopping", "tick": self.campaign.tick_count}
            return (200 if ok else 503), "application/json", json.dumps(body).encode()
        if route == "/stats":
            return 200, "application/json", json.dumps(public_stats(self)).encode()
        if route == "/stats/full":
            return self._full_stats((headers or {}).get("authorization"))
        if route == "/info":
            return info_response(self.cfg.game, self.cfg.campaign, self.cfg.tick_rate, self.cfg.send_rate)
        if route in ("/", "/ws"):
            return None if self.accepting else (503, "text/plain", b"shutting down\n")
        return self.web.answer(path)

    def _full_stats(self, authorization: str | None) -> HttpAnswer:
        def refused(e: AuthError) -> None:
            if self.host is not None:
                self.host.door.log.event(self.now(), logging.INFO, "http: /stats/full refused", e.code.name)

        return full_stats_answer(authorization, self.verifier, self.stats_dict, refused)

    # -- connections ------------------------------------------------------------------------------
    def new_session(self, now: float, *, bound: bool = True) -> ServerSession:
        """A session for a connection of this process (`bound`: with this game's inputs)."""
        cfg = self.cfg
        return ServerSession(
            max_offences=cfg.max_offences, max_frame=cfg.max_frame, rate=cfg.input_rate, burst=cfg.input_burst,
            handshake_timeout=cfg.handshake_timeout, opened_at=now, max_signal_frame=self._signal_frame,
            inputs=self.campaign.game.inputs if bound else (),
        )  # fmt: skip

    def on_open(self, conn: WsServerConnection) -> None:
        """A connection upgraded straight to this campaign (its path, or the only campaign)."""
        now = self.now()
        if self.fairplay.refuse_banned_address(conn):
            return
        self.adopt(Client(conn, self.new_session(now), now, last_rx_time=now, ip=peer_ip(conn)))

    def adopt(self, client: Client) -> None:
        """From now on `client`'s connection belongs to this campaign (a host routed it here)."""
        conn = client.conn
        conn.handler = self
        client.session.bind_inputs(self.campaign.game.inputs)
        if self.fairplay.timing:
            client.timing = TimingStats()
        self.clients[conn] = client
        if self._lag:
            self._ping(client, self.now())  # an RTT sample before the first input, if the client answers

    def on_connect(self, conn: WsServerConnection) -> bool:
        """Never called: connections are accepted by the host's front (engine/front.py), which hands
        them to a campaign once they are open."""
        return False

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        if self.host is not None:
            self.host.door.error(conn, cause, exc, self.now())

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
                self.hello(client, ev)
            elif type(ev) is PingEvent:
                session.pong(ev.client_time, now * 1000.0, self.campaign.tick_count)
            elif isinstance(ev, SIGNAL_EVENTS):  # WebRTC (netcode/signaling.py, engine/webrtc/relay.py)
                rtc = self.rtc
                if rtc is not None:
                    rtc.signal(client, ev)
                else:
                    session.notify(ErrorCode.RTC_UNAVAILABLE, "this server runs no WebRTC relay workers")
        if session.offences != errors_before:
            self.stats.protocol_errors += session.offences - errors_before
            self.fairplay.offence(client)
        flush_session(client)
        if session.close_code is not None:
            conn.close(int(session.close_code), session.close_reason or "")

    def on_close(self, conn: WsServerConnection) -> None:
        host = self.host
        admitted = host.door.closed(conn) if host is not None else True
        client = self.clients.pop(conn, None)
        self.fairplay.connection_closed(peer_ip(conn), admitted, client)
        if client is None:
            return
        self.stats.connection_closed(conn.bytes_in, conn.bytes_out, client.session.dropped)
        self.sender.remove(client)
        if self.by_account.get(client.account) is client:
            del self.by_account[client.account]
        rtc = self.rtc
        if rtc is not None:
            rtc.drop(client)
        if client.eid >= 0:
            self.by_eid.pop(client.eid, None)
            if self.progress is not None:
                self.progress.save([client.eid])
                self.progress.forget(client.eid)
            self.campaign.leave(client.eid)
            self.stats.leaves += 1
            if not self.by_eid and self._loop is not None:
                self.last_player_at = self._loop.time()

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def _signal_frame(self) -> int:
        return MAX_SIGNAL_FRAME if self.rtc is not None else 0

    def hello(self, client: Client, ev: HelloEvent) -> None:
        self.admission.hello(client, ev)

    def welcome(self, client: Client, player: int, rep: dict[str, object] | None) -> None:
        self.admission.welcome(client, player, rep)

    def stats_dict(self) -> dict[str, Any]:
        """Every figure (/stats/full, /metrics)."""
        return full_stats(self)


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
