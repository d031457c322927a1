"""Spectators: connections that watch the whole world without a ship (the /watch page).

A spectator says `"watch": 1` in its hello. It is admitted with an admin token (verified without
consuming it: like an admin bearer token it may be presented again), or with any hello when the
server runs with `--watch-public`. Its welcome names player 0 (no entity) and view radius 0; its
snapshots come out of the same replicator as the players', in a pass of their own with the whole
world in view and no byte budget. Once a second it also gets an `st` frame: the server's tick and
bandwidth figures, the players' names and the recent fair-play decisions (docs/web.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import msgpack

from engine.clients import Client
from engine.security.auth import AuthCode, AuthError
from netcode.protocol import T_SPECTATOR_INFO, CloseCode, ErrorCode
from netcode.session import HelloEvent

if TYPE_CHECKING:
    from engine.server import GameServer

log = logging.getLogger("arbiter.spectate")

MAX_SPECTATORS: Final = 16  # replicator client slots reserved for spectators
INFO_INTERVAL_S: Final = 1.0
AUDIT_EVERY: Final = 3  # refresh the fair-play decisions every N info frames
MAX_LISTED_PLAYERS: Final = 256


class Spectators:
    def __init__(self, server: GameServer) -> None:
        self.server = server
        self._task: asyncio.Task[None] | None = None
        self._decisions: list[list[Any]] = []
        self._last_bytes = 0
        self._last_at = 0.0

    def clients(self) -> list[Client]:
        return [c for c in self.server.clients.values() if c.spectator and c.conn.is_open]

    def admit(self, client: Client, ev: HelloEvent) -> None:
        """Accept the hello as a spectator's, or refuse it (err, bye, close 4006/4004)."""
        srv = self.server
        session = client.session
        account = ev.name
        if not srv.cfg.watch_public:
            if srv.verifier is None:
                session.reject(AuthCode.FORBIDDEN, "watching needs an admin token; this server has no join tokens "
                               "(start it with --watch-public)", CloseCode.UNAUTHORIZED)  # fmt: skip
                return
            try:
                claims = srv.verifier.verify(ev.token, consume=False)
                if not claims.is_admin:
                    raise AuthError(AuthCode.FORBIDDEN, f"{claims.account!r} is not an admin")
            except AuthError as e:
                log.info("spectator refused from %s: %s %s", client.conn.peer, e.code.name, e.detail)
                session.reject(int(e.code), e.public_message, CloseCode.UNAUTHORIZED)
                return
            account = claims.account
        # Every spectator still holding a replicator slot counts, a closing one too (its slot comes
        # back when it is gone).
        if sum(1 for c in srv.clients.values() if c.spectator) >= MAX_SPECTATORS:
            session.reject(ErrorCode.SERVER_FULL, "no room for another spectator", CloseCode.SERVER_FULL)
            return
        client.spectator = True
        client.account = account
        client.name = ev.name
        srv.sender.add(client)
        srv.welcome(client, 0, srv.sender.watch_rep_wire)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._inform())

    async def _inform(self) -> None:
        """Once a second, while anyone watches: figures, players and decisions (off the tick)."""
        n = 0
        while True:
            watchers = self.clients()
            if not watchers:
                return
            if n % AUDIT_EVERY == 0:
                await self._refresh_decisions()
            frame = self.info_frame()
            for c in watchers:
                c.conn.send_parts(frame, limit=self.server.cfg.write_limit)
            n += 1
            await asyncio.sleep(INFO_INTERVAL_S)

    async def _refresh_decisions(self) -> None:
        try:
            entries = await asyncio.wait_for(self.server.fairplay.audit(8, None), 2.0)
        except Exception as exc:  # a slow or broken store leaves the list as it was
            log.debug("audit not read for spectators: %s", exc)
            return
        self._decisions = [[round(float(e["ts"]), 3), str(e["action"]), e.get("account") or ""] for e in entries]

    def info_frame(self) -> bytes:
        srv = self.server
        s = srv.stats.as_dict()
        now = time.monotonic()
        out = int(s.get("bytes_out", 0))
        rate = (out - self._last_bytes) / (now - self._last_at) if self._last_at else 0.0
        self._last_bytes, self._last_at = out, now
        players = [[eid, c.name] for eid, c in list(srv.by_eid.items())[:MAX_LISTED_PLAYERS]]
        fp = srv.fairplay.referee.stats()
        frame: bytes = msgpack.packb({
            "t": T_SPECTATOR_INFO,
            "k": srv.campaign.tick_count,
            "tick_hz": s.get("tick_hz", 0.0),
            "tick_p99_ms": s.get("tick_p99_ms", 0.0),
            "ccu": len(srv.by_eid),
            "bytes_out_s": round(rate, 1),
            "players": players,
            "violations": sum(fp.get("violations", {}).values()),
            "decisions": self._decisions,
        })  # fmt: skip
        return frame

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
