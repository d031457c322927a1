"""The door of a game server process: every connection from TCP accept until it plays (docs/security.md).
One door per listening port: `arbiter host` has one for all its campaigns.

- `accept` runs at TCP accept, before a byte is read: global caps (`max_connections`,
  `max_unauth`), then the per-address limits of fair play (rate, open, not yet playing);
- `deadlines` drops connections that have not sent a complete upgrade request within
  `upgrade_timeout` (the upgrade → hello deadline is the session's);
- `phases` counts connections in every phase for /stats (engine/server_stats.py);
- peer errors and caught bugs are logged through one `LogLimiter`, aggregated per cause.
"""

from __future__ import annotations

import logging
import resource
from typing import TYPE_CHECKING

from engine.lograte import LogLimiter
from engine.security.fairplay.server_hooks import peer_ip
from netcode.ws_server import PHASE_HTTP, WsServerConnection

if TYPE_CHECKING:
    from engine.front import Front

log = logging.getLogger("arbiter.door")


class Door:
    def __init__(self, front: Front) -> None:
        self.host = front
        self.conns: dict[WsServerConnection, float] = {}  # every accepted connection: its accept time
        self.unauth: dict[WsServerConnection, float] = {}  # the ones not yet playing
        self.log = LogLimiter(log)
        self.refused = 0

    def accept(self, conn: WsServerConnection, now: float) -> bool:
        host = self.host
        cfg = host.cfg
        if not host.accepting:
            why: str | None = "door: shutting down"
        elif len(self.conns) >= cfg.max_connections:
            why = "door: max_connections reached"
        elif len(self.unauth) >= cfg.max_unauth:
            why = "door: max_unauth reached"
        else:
            why = host.admit_tcp(peer_ip(conn), now)
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
        want = self.host.cfg.max_connections + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning("open files limited to %d (ulimit -n); max_connections %d needs %d",
                            new, self.host.cfg.max_connections, want)  # fmt: skip

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
        limit = self.host.cfg.upgrade_timeout
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
