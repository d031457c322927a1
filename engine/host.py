"""`arbiter host`: many campaigns in one process, behind one port (and `arbiter serve`: one of them).

The host owns what a process has once: the listening port and its door (global and per-address
caps), the admin API and /metrics, the tick scheduler that staggers the campaigns' ticks and keeps
each on its own budget (engine/scheduler.py), Agones, the WebRTC relay workers, and the shared
stores' thread and pool (engine/shared.py). Each campaign is a `GameServer` (engine/server.py) with
its own world, journal, SQLite file, sessions, fair play and stats.

A connection reaches its campaign by path (`/c/{campaign}/`) or, on `/`, by the audience of the join
token in its hello (engine/routing.py). Until then it waits in the host's lobby (its session
answers pings and counts offences); then the host hands it to the campaign, which from then on gets
its frames directly (the connection's handler is switched: no cost per message).

A campaign with nobody connected for `hibernate_after_s` is sealed (final snapshot, locally and to
PostgreSQL) and unloaded; a hello for it, a spectator, or a start request from the hub or the admin
API wakes it: recovery from that snapshot (plus any journal tail) as after a restart. See
docs/hosting.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import psutil

from engine.clients import Client
from engine.config import ServerConfig
from engine.door import Door
from engine.front import Front
from engine.heap import release_memory
from engine.hibernation import advance_missed, check_woken, pack_world, seal_mark, unpack_world
from engine.metrics import metrics_handler, process_metrics
from engine.recovery import read_meta
from engine.relocation import restore_from_pg
from engine.routing import valid_campaign_id
from engine.scheduler import Scheduler
from engine.security.admin import AdminServer, start_admin
from engine.security.auth import KeyRing, TokenVerifier
from engine.security.fairplay.server_hooks import AdminAdapter
from engine.server import GameServer
from engine.shared import Shared
from engine.web_routes import WebRoutes, page_config
from netcode.protocol import MAX_HELLO_FRAME
from netcode.signaling import MAX_SIGNAL_FRAME
from netcode.ws_server import DoorLimits, connection_factory
from persistence.campaign_store import DB_FILENAME

log = logging.getLogger("arbiter.host")

STOPPED_MARK: Final = "stopped"  # a file in a campaign's directory: stopped on purpose, not hibernated
HOUSEKEEPING_S: Final = 0.5
RELEASE_EVERY_S: Final = 2.0  # unloaded campaigns' memory goes back to the system at most this often
WAKE_PG_WAIT_S: Final = 0.5  # a wake asks PostgreSQL whether its copy is newer, but not for longer
TIMER_SLACK_S: Final = 0.001  # uvloop's timers are to the millisecond: what is due within one runs now


class PlacementRefusedError(Exception):
    """The host cannot run this campaign now (full, unknown game, another game under that id, ...)."""


class UnknownCampaignError(PlacementRefusedError):
    pass


@dataclass(slots=True)
class CampaignSpec:
    """What a campaign is: its id, game, seed and game config (max_players included)."""

    campaign: str
    game: str
    seed: int = 1
    config: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class HostConfig:
    name: str = "host"  # the admin tokens' audience for the host's own routes
    capacity: int = 100  # campaigns loaded at once (hibernated ones do not count)
    hibernate_after_s: float = 60.0  # a campaign nobody was connected to for this long is unloaded; 0: never
    phases: int = 16  # slots of the tick period the campaigns' ticks are spread over
    share: float | None = 0.5  # at most this fraction of the loop per campaign (None: no budget)
    discover: bool = True  # campaigns found in the data dir are known (hibernated) at start
    public_url: str = ""  # what players connect to ("" = ws://HOST:PORT/; "{port}" = the bound port)
    commit_every_s: float = 0.1  # each campaign's journal commits at most this often (group commit)


@dataclass(slots=True, eq=False)
class Entry:
    """A campaign this host runs: loaded (`server`) or hibernated."""

    spec: CampaignSpec
    state: str  # starting | running | hibernating | hibernated | waking | stopping
    server: GameServer | None = None
    blob: bytes | None = None  # an in-memory campaign's snapshot while hibernated (no data dir)
    hibernated_wall: float = 0.0
    task: asyncio.Task[Any] | None = None  # the start, wake or hibernation in progress
    sealed: tuple[int, int] | None = None  # (tick, state hash) it hibernated at: what a wake must give back
    web: WebRoutes | None = None  # its pages while hibernated


class Host:
    def __init__(
        self,
        cfg: ServerConfig,
        hcfg: HostConfig | None = None,
        *,
        ring: KeyRing | None = None,
        single: GameServer | None = None,
    ) -> None:
        """`cfg`: the process's settings and every campaign's defaults; `ring`: the join-token keys
        (None: tokens off); `single`: serve this one campaign alone (`arbiter serve`)."""
        self.cfg = cfg
        self.hcfg = hcfg = hcfg or HostConfig()
        self.single = single
        self.shared = single.shared if single is not None else Shared(cfg, commit_every_s=hcfg.commit_every_s)
        self.ring = ring
        self.name = cfg.campaign if single is not None else hcfg.name
        self.capacity = 1 if single is not None else hcfg.capacity
        if single is not None:
            self.admin_verifier = single.verifier
        else:
            self.admin_verifier = TokenVerifier(ring, hcfg.name) if ring is not None else None
        self.entries: dict[str, Entry] = {}
        self.front = Front(self)  # the port's handler: door, lobby, routes (engine/front.py)
        groups = max(1, cfg.tick_rate // max(1, cfg.send_rate))
        self.scheduler: Scheduler[GameServer] = Scheduler(
            cfg.tick_rate, cfg.send_rate, groups, phases=hcfg.phases, share=None if single else hcfg.share,
            max_catchup=cfg.max_catchup, slack_s=TIMER_SLACK_S, timer=time.perf_counter,
        )  # fmt: skip
        self.accepting = False
        self.port = cfg.port
        self.admin: AdminServer | None = None
        self.agones: Any = None  # engine.agones.AgonesLink under Agones
        self.rtc: Any = None  # engine.webrtc.relay.WebRtcRelay with relay workers
        self.proc = psutil.Process()
        self.started_wall = time.time()
        self.loop_turns = 0  # scheduler iterations: Agones' liveness
        self.wakes = 0
        self.hibernations = 0
        self.wake_ms: deque[float] = deque(maxlen=1000)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._ticking = False
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unloaded = False  # campaigns were unloaded since the memory was last given back
        self._released_at = 0.0
        self.web = WebRoutes(lambda: page_config(cfg.game, "", cfg.hub_url, ring is not None, cfg.watch_public, "",
                                                 self.rtc is not None), files=self.shared.web_files)  # fmt: skip

    @classmethod
    def serving(cls, server: GameServer) -> Host:
        """The host of `arbiter serve`: this campaign alone, on its own port, never hibernated."""
        hcfg = HostConfig(name=server.cfg.campaign, capacity=1, hibernate_after_s=0.0, share=None, discover=False)
        host = cls(server.cfg, hcfg, single=server)
        spec = CampaignSpec(server.cfg.campaign, server.cfg.game, server.cfg.seed, dict(server.cfg.game_config))
        host.entries[spec.campaign] = Entry(spec, "starting", server)
        server.host = host
        return host

    # -- what is loaded -------------------------------------------------------------------------------
    def loaded(self) -> list[GameServer]:
        return [e.server for e in self.entries.values() if e.server is not None and e.state == "running"]

    def hibernated_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.state == "hibernated")

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries.values():
            out[e.state] = out.get(e.state, 0) + 1
        return out

    def wake_ms_summary(self) -> dict[str, float]:
        if not self.wake_ms:
            return {}
        v = np.array(self.wake_ms)
        return {"n": float(v.size), "p50": round(float(np.percentile(v, 50)), 2),
                "p99": round(float(np.percentile(v, 99)), 2), "max": round(float(v.max()), 2)}  # fmt: skip

    def campaign_of(self, client: Client) -> GameServer | None:
        """The campaign a connection joined (None while it waits in the lobby)."""
        handler = client.conn.handler
        return handler if isinstance(handler, GameServer) else None

    @property
    def stopped(self) -> bool:
        """The drain is over (every campaign sealed, the port closed)."""
        return self._stopped.is_set()

    @property
    def door(self) -> Door:
        return self.front.door

    def server(self, cid: str) -> GameServer | None:
        e = self.entries.get(cid)
        return e.server if e is not None and e.state == "running" else None

    def now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    @property
    def url(self) -> str:
        template = self.hcfg.public_url or f"ws://{self.cfg.host}:{{port}}/"
        return template.replace("{port}", str(self.port))

    def campaign_url(self, cid: str) -> str:
        """Where a campaign's players connect (its own path on a host; a join token also routes)."""
        return self.url if self.single is not None else self.url.rstrip("/") + f"/c/{cid}/"

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        cfg = self.cfg
        if self.single is not None:
            entry = self.entries[self.single.cfg.campaign]
            await self._attach(entry, self.single)
        elif cfg.data_dir and self.hcfg.discover:
            await asyncio.to_thread(self._discover)
        if cfg.admin_port is not None:
            from engine.host_admin import admin_backend, host_routes

            backend = AdminAdapter(self.single.fairplay) if self.single is not None else admin_backend(self)
            self.admin = await start_admin(backend, self.admin_verifier, cfg.admin_host, cfg.admin_port,
                                           open_get={"/metrics": metrics_handler},
                                           routes=None if self.single is not None else host_routes(self))  # fmt: skip
            log.info("admin API on %s", self.admin.url)
        if cfg.webrtc.workers > 0:
            from engine.webrtc.relay import WebRtcRelay

            self.rtc = WebRtcRelay(self, cfg.webrtc)
            await self.rtc.start()
        self.door.raise_fd_limit()
        # A hello may carry a 4 KiB token (with WebRTC, an offer may be larger still).
        frame = max(cfg.max_frame, MAX_HELLO_FRAME, MAX_SIGNAL_FRAME if self.rtc is not None else 0)
        limits = DoorLimits(
            max_size=frame, max_message=frame, max_request_bytes=cfg.max_request_bytes,
            max_headers=cfg.max_headers, pause_reading_at=cfg.write_limit, max_backlog=cfg.max_backlog,
        )  # fmt: skip
        self._server = await loop.create_server(connection_factory(self.front, limits, loop.time), cfg.host, cfg.port,
                                                backlog=2048)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        self.accepting = True
        self._started = True
        from engine.agones import link_host

        self.agones = await link_host(self)  # None unless running under Agones
        if self.ring is None and (self.single is None or self.single.verifier is None):
            log.warning("join tokens are off (no ARBITER_JWT_SECRET/KEYS/KEYFILE): any hello may play")
        if self.single is not None:
            log.info("campaign %s (%s, seed %d) listening on ws://%s:%d/", cfg.campaign, cfg.game, cfg.seed,
                     cfg.host, self.port)  # fmt: skip
        else:
            log.info("host %s listening on ws://%s:%d/ (%d campaigns known, capacity %d)", self.name, cfg.host,
                     self.port, len(self.entries), self.capacity)  # fmt: skip

    def _discover(self) -> None:
        """Every campaign in the data dir is this host's: known, hibernated, woken on demand."""
        root = Path(self.cfg.data_dir)
        if not root.is_dir():
            return
        for d in sorted(root.iterdir()):
            if not (d / DB_FILENAME).is_file() or (d / STOPPED_MARK).exists() or not valid_campaign_id(d.name):
                continue
            try:
                meta = read_meta(d / DB_FILENAME)
            except Exception as exc:  # unreadable: not ours to wake
                log.warning("campaign %s in the data dir is not usable: %s", d.name, exc)
                continue
            if meta:
                spec = CampaignSpec(d.name, str(meta["game"]), int(meta["seed"]), dict(meta["config"]))
                spec.config.pop("tick_rate", None)
                self.entries[d.name] = Entry(spec, "hibernated", web=self._pages(spec))
        if self.entries:
            log.info("%d campaigns in %s: hibernated until a player comes", len(self.entries), root)
            process_metrics().hibernated.set(self.hibernated_count())

    async def run(self) -> None:
        """Tick until `request_stop()`; then drain every campaign and stop."""
        if not self._started:
            await self.start()
        house = asyncio.get_running_loop().create_task(self._housekeeping(), name="host-housekeeping")
        try:
            await self._tick_loop()
        finally:
            house.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await house
            await self._shutdown()

    def request_stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

    async def _shutdown(self) -> None:
        """Drain: stop accepting, then every campaign seals itself (final snapshot, locally and to
        PostgreSQL) and tells its players to reconnect (`bye` "relocate")."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        self.front.close_lobby("server shutting down")
        if self._tasks:  # starts, wakes and hibernations in flight finish first (bounded)
            _, late = await asyncio.wait(list(self._tasks), timeout=self.cfg.drain_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        running = [e for e in self.entries.values() if e.server is not None]
        await asyncio.gather(*(self._close(e, relocate=True, reason="server shutting down") for e in running))
        if self.rtc is not None:
            await self.rtc.close()
        if self.admin is not None:
            await self.admin.close()
        if self.agones is not None:
            await self.agones.stop()  # the drain is done: Agones may now delete the pod
        await self.shared.close()
        self._stopped.set()
        if self.single is None:
            log.info("host %s stopped", self.name)

    # -- the tick -------------------------------------------------------------------------------------
    def _schedule(self, server: GameServer) -> None:
        server.slot = self.scheduler.add(server.cfg.campaign, server, self.now(), server.sender.groups)

    def _unschedule(self, server: GameServer) -> None:
        self.scheduler.remove(server.cfg.campaign)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time
        self._ticking = True
        for server in self.loaded():
            if server.slot is None:
                self._schedule(server)
        sched = self.scheduler
        while not self._stopping.is_set():
            self.loop_turns += 1
            sched.run_due(clock)
            nxt = sched.next_deadline()
            delay = 0.05 if nxt is None else nxt - clock() - TIMER_SLACK_S
            # A plain sleep, not wait_for(stopping): that makes a task per wake-up; a stop waits a tick.
            # Never less than the timers' millisecond: a shorter sleep returns at once and spins.
            await asyncio.sleep(min(max(delay, TIMER_SLACK_S), 0.05) if delay > 0 else 0)
        self._ticking = False

    # -- housekeeping (off the tick: deadlines, keepalive, hibernation) ------------------------------
    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        after = self.hcfg.hibernate_after_s
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            now = loop.time()
            self.front.deadlines(now)
            for server in self.loaded():
                server.housekeep(now)
            if self._unloaded and now - self._released_at >= RELEASE_EVERY_S:
                self._unloaded = False
                self._released_at = now
                release_memory()
            if after > 0:
                for e in list(self.entries.values()):
                    s = e.server
                    if e.state == "running" and s is not None and e.task is None and self._idle(s, now, after):
                        self.spawn(self.hibernate(e.spec.campaign))

    def _idle(self, server: GameServer, now: float, after: float) -> bool:
        if server.clients or now - server.last_player_at < after:
            return False
        return not self.front.waiting_for(server.cfg.campaign)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- campaigns: start, wake, hibernate, stop ------------------------------------------------------
    def campaign_config(self, spec: CampaignSpec) -> ServerConfig:
        return replace(self.cfg, campaign=spec.campaign, game=spec.game, seed=spec.seed,
                       game_config=dict(spec.config))  # fmt: skip

    def _verifier(self, cid: str) -> TokenVerifier | None:
        return TokenVerifier(self.ring, cid) if self.ring is not None else None

    def pages(self, e: Entry) -> WebRoutes:
        """A hibernated campaign's pages (its config without waking it)."""
        if e.web is None:
            e.web = self._pages(e.spec)
        return e.web

    def _pages(self, spec: CampaignSpec) -> WebRoutes:
        cfg = self.cfg

        def config() -> dict[str, Any]:
            return page_config(spec.game, spec.campaign, cfg.hub_url, self.ring is not None, cfg.watch_public,
                               f"/c/{spec.campaign}", self.rtc is not None)  # fmt: skip

        return WebRoutes(config, files=self.shared.web_files)

    async def start_campaign(self, spec: CampaignSpec) -> GameServer:
        """Start the campaign here (restored from PostgreSQL when this machine has no current copy),
        or wake it, or find it running. PlacementRefusedError when it cannot run here now."""
        if not valid_campaign_id(spec.campaign):
            raise PlacementRefusedError(f"invalid campaign id {spec.campaign!r}")
        if self.single is not None and spec.campaign != self.single.cfg.campaign:
            raise PlacementRefusedError("this server runs one campaign (arbiter serve)")
        e = self.entries.get(spec.campaign)
        if e is not None:
            if spec.game != e.spec.game:
                raise PlacementRefusedError(f"campaign {spec.campaign} runs {e.spec.game} here, not {spec.game}")
            return await self.ensure_loaded(spec.campaign)
        e = Entry(spec, "starting", web=self._pages(spec))
        self.entries[spec.campaign] = e
        e.task = self.spawn(self._load(e, fresh=True))
        return await asyncio.shield(e.task)

    async def ensure_loaded(self, cid: str) -> GameServer:
        """The running campaign, woken first if it hibernates. UnknownCampaignError when there is none."""
        while True:
            e = self.entries.get(cid)
            if e is None:
                raise UnknownCampaignError(f"no campaign {cid!r} on this host")
            if e.state == "running" and e.server is not None:
                return e.server
            if e.task is not None and not e.task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(e.task)
                continue
            if e.state == "hibernated":
                e.task = self.spawn(self._load(e, fresh=False))
                await asyncio.shield(e.task)
                continue
            raise PlacementRefusedError(f"campaign {cid} is {e.state}")

    async def _load(self, e: Entry, *, fresh: bool) -> GameServer:
        """Open (a start) or recover (a wake) a campaign and put it on the schedule."""
        t0 = time.perf_counter()
        cid = e.spec.campaign
        e.state = "starting" if fresh else "waking"
        server: GameServer | None = None
        try:
            await self._make_room(cid)
            cfg = self.campaign_config(e.spec)
            verifier = self._verifier(cid)
            if cfg.data_dir:
                if cfg.pg_dsn and cfg.ship.enabled and await self._restore(cfg, fresh):
                    e.sealed = None  # another host ran it meanwhile: its newer state is the one to wake
                (Path(cfg.data_dir) / cid / STOPPED_MARK).unlink(missing_ok=True)
                # Opening or recovering its data dir reads the disk: in a worker thread.
                server = await asyncio.to_thread(GameServer, cfg, verifier=verifier, shared=self.shared)
            else:
                server = GameServer(cfg, unpack_world(cfg, e.blob), verifier, shared=self.shared)
            check_woken(server, e.sealed)
            await advance_missed(server, e.hibernated_wall)
            await self._attach(e, server)
            e.blob = None  # only now: a wake that failed keeps the world to try again with
        except BaseException:
            if server is not None and e.server is not server and server.journal is not None:
                # Its store holds the campaign's file lock: a later wake could never open it again.
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(server.journal.store.close)
            if fresh:
                self.entries.pop(cid, None)
            else:
                e.state = "hibernated"
            raise
        finally:
            e.task = None
        if not fresh:
            took = time.perf_counter() - t0
            self.wakes += 1
            self.wake_ms.append(took * 1e3)
            process_metrics().wake_seconds.observe(took)
            log.info("campaign %s woke in %.0f ms", cid, took * 1e3)
        process_metrics().hibernated.set(self.hibernated_count())
        return server

    async def _restore(self, cfg: ServerConfig, fresh: bool) -> bool:
        """PostgreSQL's copy replaces the local one when it is newer (another host ran the campaign
        meanwhile); True when it did. A wake has a current local copy unless that happened: during an
        outage it does not wait for PostgreSQL longer than WAKE_PG_WAIT_S."""
        pool = self.shared.pg
        if not fresh and pool is not None:
            try:  # only the question is bounded: a restore that starts must finish before the open
                await asyncio.wait_for(pool.get(), WAKE_PG_WAIT_S)
            except Exception as exc:
                log.warning("campaign %s wakes from its local copy: PostgreSQL not reachable (%s)", cfg.campaign,
                            type(exc).__name__)  # fmt: skip
                return False
        return (await restore_from_pg(cfg.pg_dsn, cfg.data_dir, cfg.campaign, cfg.ship, pool=pool)).restored

    async def _attach(self, e: Entry, server: GameServer) -> None:
        server.host = self
        server.path_prefix = "" if self.single is not None else f"/c/{server.cfg.campaign}"
        await server.open()
        e.server = server
        e.state = "running"
        if self._ticking:
            self._schedule(server)
        if self.agones is not None and self.single is None:
            self.spawn(self._agones_list(server.cfg.campaign, True))

    async def _make_room(self, cid: str) -> None:
        """At capacity: hibernate the campaign idle the longest, or refuse."""
        busy = [x for x in self.entries.values() if x.spec.campaign != cid and x.state != "hibernated"]
        if len(busy) < self.capacity:
            return
        idle = sorted((x for x in busy if x.state == "running" and x.server is not None and not x.server.clients
                       and x.task is None), key=lambda x: x.server.last_player_at if x.server else 0.0)  # fmt: skip
        if not idle or not await self.hibernate(idle[0].spec.campaign):
            raise PlacementRefusedError(f"this host is full ({self.capacity} campaigns loaded)")

    async def hibernate(self, cid: str) -> bool:
        """Seal and unload a campaign nobody is connected to. False when it is busy or not running."""
        e = self.entries.get(cid)
        if e is None or e.state != "running" or e.server is None or e.server.clients or e.task is not None:
            return False
        if self.single is not None:
            return False
        e.task = asyncio.current_task()
        try:
            server = e.server
            e.state = "hibernating"
            await self._close(e, relocate=True, reason="campaign hibernates")
            e.sealed = seal_mark(server)
            if not server.cfg.data_dir:
                e.blob = pack_world(server)
            e.hibernated_wall = time.time()
            e.state = "hibernated"
            if e.web is None:
                e.web = self._pages(e.spec)
        finally:
            e.task = None
        self.hibernations += 1
        self._unloaded = True  # the next housekeeping round gives its memory back
        process_metrics().hibernated.set(self.hibernated_count())
        log.info("campaign %s hibernated", cid)
        return True

    async def stop_campaign(self, cid: str, reason: str = "campaign stopped") -> bool:
        """Stop and forget a campaign (its data stays, marked stopped). False when there is none."""
        e = self.entries.get(cid)
        if e is None or (self.single is not None):
            if self.single is not None and cid == self.single.cfg.campaign:
                self.request_stop()
                return True
            return False
        while e.task is not None and not e.task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(e.task)
        e.state = "stopping"
        if e.server is not None:
            await self._close(e, relocate=True, reason=reason)
            self._unloaded = True
        self.entries.pop(cid, None)
        if self.cfg.data_dir and (Path(self.cfg.data_dir) / cid).is_dir():
            (Path(self.cfg.data_dir) / cid / STOPPED_MARK).write_text(reason + "\n")
        process_metrics().hibernated.set(self.hibernated_count())
        log.info("campaign %s stopped: %s", cid, reason)
        return True

    async def _close(self, e: Entry, *, relocate: bool, reason: str) -> None:
        server = e.server
        if server is None:
            return
        self._unschedule(server)
        server.slot = None
        try:
            await server.close(relocate=relocate, reason=reason)
        finally:
            e.server = None
            if self.agones is not None and self.single is None:
                self.spawn(self._agones_list(server.cfg.campaign, False))

    async def _agones_list(self, cid: str, loaded: bool) -> None:
        """The `campaigns` List follows what is loaded (a failure is logged: the tick goes on)."""
        try:
            if loaded:
                await self.agones.campaign_started(cid)
            else:
                await self.agones.campaign_stopped(cid)
        except Exception as exc:
            log.warning("Agones list %s of %s failed: %s", "add" if loaded else "remove", cid, exc)
