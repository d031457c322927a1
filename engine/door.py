"""The door of a game server: every connection from TCP accept until it plays, and what the
public may read about them (docs/security.md).

- `accept` runs at TCP accept, before a byte is read: global caps (`max_connections`,
  `max_unauth`), then the per-address limits of fair play (rate, open, not yet playing);
- `deadlines` drops connections that have not sent a complete upgrade request within
  `upgrade_timeout` (the upgrade → hello deadline is the session's);
- `phases` counts connections in every phase for /stats;
- peer errors and caught bugs are logged through one `LogLimiter`, aggregated per cause.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from typing import TYPE_CHECKING, Any, Final

from engine.lograte import LogLimiter
from engine.security.fairplay.server_hooks import peer_ip
from netcode.protocol import PROTOCOL_VERSION
from netcode.ws_server import PHASE_HTTP, WsServerConnection

if TYPE_CHECKING:
    from engine.server import GameServer

log = logging.getLogger("arbiter.door")

# What public /stats shows (a load balancer's and a player's figures); the rest needs an admin token.
PUBLIC_STATS: Final = (
    "protocol_version", "game", "campaign", "tick", "tick_rate", "send_rate", "ticks", "tick_hz", "tick_p50_ms",
    "tick_p99_ms", "send_p99_ms", "overruns", "ccu", "capacity", "connections", "connection_phases", "sends",
    "snapshots_sent",
    "snapshots_skipped", "bytes_out", "inputs", "uptime_s",
)  # fmt: skip


class Door:
    def __init__(self, server: GameServer) -> None:
        self.server = server
        self.conns: dict[WsServerConnection, float] = {}  # every accepted connection: its accept time
        self.unauth: dict[WsServerConnection, float] = {}  # the ones not yet playing
        self.log = LogLimiter(log)
        self.refused = 0

    def accept(self, conn: WsServerConnection, now: float) -> bool:
        server = self.server
        cfg = server.cfg
        if not server._accepting:
            why: str | None = "door: shutting down"
        elif len(self.conns) >= cfg.max_connections:
            why = "door: max_connections reached"
        elif len(self.unauth) >= cfg.max_unauth:
            why = "door: max_unauth reached"
        else:
            why = server.fairplay.admit_tcp(peer_ip(conn))
            if why is not None:
                why = "door: per-address limit"
        if why is not None:
            self.refused += 1
            self.log.event(now, logging.INFO, why, str(conn.peer))
            return False
        self.conns[conn] = now
        self.unauth[conn] = now
        return True

    def raise_fd_limit(self) -> None:
        """Every connection is a file descriptor: lift the soft limit to fit `max_connections` (and
        the stores' files), or say that it cannot; past it, accept() itself would fail."""
        want = self.server.cfg.max_connections + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning("open files limited to %d (ulimit -n); max_connections %d needs %d",
                            new, self.server.cfg.max_connections, want)  # fmt: skip

    def admitted(self, conn: WsServerConnection) -> bool:
        """`conn` now plays; False if it already did."""
        return self.unauth.pop(conn, None) is not None

    def closed(self, conn: WsServerConnection) -> bool:
        """`conn` is gone; whether it had been admitted."""
        self.conns.pop(conn, None)
        return self.unauth.pop(conn, None) is None

    def error(self, conn: WsServerConnection, cause: str, exc: BaseException | None, now: float) -> None:
        self.log.event(now, logging.ERROR if exc is not None else logging.INFO, cause, str(conn.peer), exc)

    def deadlines(self, now: float) -> None:
        """Drop connections that sent no complete upgrade request in time; flush the log's counts."""
        limit = self.server.cfg.upgrade_timeout
        for conn, t in list(self.unauth.items()):
            if conn.phase is PHASE_HTTP and now - t > limit:
                self.log.event(now, logging.INFO, "door: no upgrade request in time", str(conn.peer))
                conn.abort()
        self.log.tick(now)

    def phases(self) -> dict[str, int]:
        """Open connections by phase: HTTP (before the upgrade), hello (upgraded, not playing), playing."""
        http = sum(1 for c in self.unauth if c.phase is PHASE_HTTP)
        playing = len(self.conns) - len(self.unauth)  # players and spectators
        return {"http": http, "hello": len(self.unauth) - http, "playing": playing}

    # -- /stats -----------------------------------------------------------------------------------
    def full_stats(self) -> dict[str, Any]:
        """Every figure (`/stats/full`, admin token)."""
        s = self.server
        d = s.stats.as_dict()
        proc = s._proc
        with proc.oneshot():
            cpu = proc.cpu_times()
            rss = proc.memory_info().rss
        d.update(
            protocol_version=PROTOCOL_VERSION, game=s.cfg.game, campaign=s.cfg.campaign, tick=s.campaign.tick_count,
            tick_rate=s.cfg.tick_rate, send_rate=s.cfg.send_rate, ccu=len(s.by_eid),
            capacity=s.campaign.game.max_players, connections=len(self.conns), connection_phases=self.phases(),
            refused_connections=self.refused,
            door_events=dict(self.log.total.most_common(20)), door_bugs=self.log.bugs,
            overruns=s._ticker.late_ticks, dropped_ticks=s._ticker.dropped_ticks,
            uptime_s=round(time.time() - s._started_wall, 3), cpu_s=round(cpu.user + cpu.system, 3),
            rss_mb=round(rss / 2**20, 1), pid=os.getpid(),
        )  # fmt: skip
        d["inputs"] = d["inputs_accepted"] + d["inputs_refused"]
        d["fairplay"] = s.fairplay.referee.stats()
        if s.progress is not None:
            d["pg"] = {k: v for k, v in s.progress.pg.stats().items() if isinstance(v, int | float | str | bool)}
            d["pg"]["ledger_rows"] = s.progress.ledger_rows
        if s.shipper is not None:
            d["ship"] = s.shipper.stats()
        if s.rtc is not None:
            d["webrtc"] = s.rtc.stats()
        j = s.journal
        if j is not None:
            st = j.store
            d.update(
                durable_tick=j.durable_tick, journal_backlog=j.backlog, store_queue_depth=st.queue_depth,
                store_last_commit_ms=round(st.last_commit_ms, 3), store_bytes_written=st.bytes_written,
                store_write_errors=st.write_errors, snapshots_taken=j.snapshots_taken,
            )  # fmt: skip
        return d

    def public_stats(self) -> dict[str, Any]:
        """What anyone may read on the game port: load and health; nothing that helps tune a cheat
        (violation counters, bans) or size an attack (memory, pid, door events)."""
        s = self.server
        d = s.stats.as_dict()
        d.update(
            inputs=d["inputs_accepted"] + d["inputs_refused"], protocol_version=PROTOCOL_VERSION, game=s.cfg.game,
            campaign=s.cfg.campaign, tick=s.campaign.tick_count, tick_rate=s.cfg.tick_rate,
            send_rate=s.cfg.send_rate, ccu=len(s.by_eid), capacity=s.campaign.game.max_players,
            connections=len(self.conns), connection_phases=self.phases(), overruns=s._ticker.late_ticks,
            uptime_s=round(time.time() - s._started_wall, 3),
        )  # fmt: skip
        return {k: d[k] for k in PUBLIC_STATS}
