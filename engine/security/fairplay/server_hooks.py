"""Fair play wired into one game server: the Enforcer and the AdminBackend the referee and the
admin API need, and the translation of sessions' offences and token refusals into violations.

Kept out of engine/server.py so the server stays a transport-and-tick file; everything here runs
on the server's loop and none of it awaits on the tick path.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from engine.clients import Client, flush_session
from engine.security.auth import AuthCode
from engine.security.fairplay.kinds import (
    V_BAD_TOKEN,
    V_FLOOD,
    V_HANDSHAKE,
    V_MALFORMED,
    V_OVERSIZED,
    V_ROBOTIC_TIMING,
    V_TOKEN_REPLAY,
)
from engine.security.fairplay.referee import FairPlayConfig, Referee
from netcode.protocol import CloseCode, ErrorCode, encode_bye, encode_error
from netcode.ws_frames import CLOSE_POLICY, CLOSE_TOO_BIG
from persistence.fairplay_records import BanRecord, FairplayStore
from persistence.fairplay_store import SqliteFairplayStore
from persistence.pg_fairplay import PgFairplayStore

if TYPE_CHECKING:
    from engine.server import GameServer
    from netcode.ws_server import WsServerConnection

log = logging.getLogger("arbiter.fairplay")

OFFENCE_KINDS: Final[dict[int, int]] = {
    ErrorCode.TOO_LARGE: V_OVERSIZED,
    ErrorCode.RATE_LIMITED: V_FLOOD,
}
# Close codes the transport fails a connection with, as violations (others: malformed).
OFFENCE_CLOSE_KINDS: Final[dict[int, int]] = {CLOSE_TOO_BIG: V_OVERSIZED, CLOSE_POLICY: V_FLOOD}


def peer_ip(conn: WsServerConnection) -> str:
    peer = conn.peer
    return str(peer[0]) if peer else ""


def open_store(data_dir: str, campaign: str, pg_dsn: str) -> FairplayStore:
    """Bans and audit: PostgreSQL when configured (shared by every campaign server), else the
    campaign's own SQLite file (in memory for a server without a data dir)."""
    if pg_dsn:
        return PgFairplayStore(pg_dsn)
    return SqliteFairplayStore.open(data_dir or None, campaign)


def _close(c: Client, code: CloseCode, reason: str, err: ErrorCode | None) -> None:
    """Tell the client why (an `err` frame when there is a code for it, then `bye`) and close."""
    if err is not None:
        c.session.notify(err, reason)
    c.session.send_bye(reason, code)
    flush_session(c)
    c.conn.close(int(code), reason[:100])


def _ban_message(ban: BanRecord) -> str:
    if ban.until is None:
        return "banned permanently"
    return "banned until " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ban.until))


class ServerFairPlay:
    """Implements engine.security.fairplay.referee.Enforcer and engine.security.admin.AdminBackend for a GameServer."""

    def __init__(self, server: GameServer, cfg: FairPlayConfig, store: FairplayStore) -> None:
        self.server = server
        scfg = server.cfg
        path = str(Path(scfg.data_dir) / scfg.campaign) if scfg.data_dir else ""
        self.referee = Referee(cfg, store, scfg.campaign, self, replay_path=path)
        self.timing = cfg.timing_signal and cfg.policy.mode != "off"

    def _clients_of(self, account: str) -> Iterator[Client]:
        return (c for c in list(self.server.clients.values()) if c.account == account)

    def _now(self) -> float:
        return self.server.now()

    # -- Enforcer ---------------------------------------------------------------------------------
    def warn(self, account: str, message: str) -> None:
        for c in self._clients_of(account):
            c.session.notify(ErrorCode.WARNED, message)
            flush_session(c)

    def kick(self, account: str, reason: str, banned: bool) -> int:
        n = 0
        code = CloseCode.BANNED if banned else CloseCode.KICKED
        for c in self._clients_of(account):
            _close(c, code, reason, ErrorCode.BANNED if banned else None)
            n += 1
        return n

    def close_address(self, ip_range: str, reason: str) -> int:
        net = ipaddress.ip_network(ip_range, strict=False)
        n = 0
        for c in list(self.server.clients.values()):
            try:
                addr = ipaddress.ip_address(c.ip)
            except ValueError:
                continue
            if addr.version != net.version or addr not in net:
                continue
            _close(c, CloseCode.BANNED, reason, ErrorCode.BANNED)
            n += 1
        return n

    # -- hooks the server calls -------------------------------------------------------------------
    def admit_tcp(self, ip: str) -> str | None:
        """At TCP accept, before a byte is read: why the address may not connect now, or None."""
        return self.referee.check_connection(ip, self._now())

    def refuse_banned_address(self, conn: WsServerConnection) -> bool:
        """At the upgrade: True when the address is banned (the client is told why and closed)."""
        ban = self.referee.check_address_ban(peer_ip(conn))
        if ban is None:
            return False
        msg = _ban_message(ban)
        conn.send_parts(encode_error(ErrorCode.BANNED, msg))
        conn.send_parts(encode_bye(msg))
        conn.close(int(CloseCode.BANNED), msg[:100])
        return True

    def connection_admitted(self, ip: str) -> None:
        self.referee.connection_admitted(ip)

    def connection_closed(self, ip: str, admitted: bool, client: Client | None) -> None:
        """Any accepted TCP connection is gone; `client` when it had upgraded."""
        self.referee.connection_closed(ip, admitted)
        if client is None:
            return
        code = client.conn.frame_error
        if code is not None:  # the transport failed the connection (size limit, bad framing, flood)
            kind = OFFENCE_CLOSE_KINDS.get(code, V_MALFORMED)
            self.referee.on_protocol(kind, client.account or None, ip, float(code), 0.0,
                                     self.server.campaign.tick_count, self._now())  # fmt: skip

    def offence(self, client: Client) -> None:
        """The client's session just counted an offence (see ServerSession.last_offence)."""
        code = client.session.last_offence
        kind = OFFENCE_KINDS.get(int(code) if code is not None else 0, V_MALFORMED)
        self.referee.on_protocol(kind, client.account or None, client.ip, float(code or 0), 0.0,
                                 self.server.campaign.tick_count, self._now())  # fmt: skip

    def handshake_timeout(self, client: Client) -> None:
        self.referee.on_protocol(V_HANDSHAKE, None, client.ip, 0.0, 0.0, self.server.campaign.tick_count, self._now())

    def token_refused(self, client: Client, code: AuthCode) -> None:
        kind = V_TOKEN_REPLAY if code == AuthCode.TOKEN_REPLAYED else V_BAD_TOKEN
        self.referee.on_protocol(kind, None, client.ip, float(code), 0.0, self.server.campaign.tick_count, self._now())

    def refuse_banned(self, client: Client, account: str) -> bool:
        """At hello: True when the account or address is banned (the session is rejected)."""
        ban = self.referee.check_hello(account, client.ip)
        if ban is None:
            return False
        log.info("hello of banned %s from %s refused (ban %d)", account, client.ip, ban.ban_id)
        client.session.reject(ErrorCode.BANNED, _ban_message(ban), CloseCode.BANNED)
        return True

    def input_arrived(self, client: Client, now: float) -> None:
        timing = client.timing
        if timing is None:
            return
        cv = timing.add(now)
        if cv is not None and client.account:
            self.referee.on_protocol(V_ROBOTIC_TIMING, client.account, client.ip, cv, timing.min_cv,
                                     self.server.campaign.tick_count, now)  # fmt: skip

    def on_tick(self, violations: list[tuple[int, int, float, float]], tick: int) -> None:
        by_eid = self.server.by_eid

        def account_of(eid: int) -> str | None:
            c = by_eid.get(eid)
            return c.account if c is not None else None

        self.referee.on_tick(tick, violations, account_of, self._now())

    # -- AdminBackend -----------------------------------------------------------------------------
    def players(self) -> list[dict[str, Any]]:
        now = self._now()
        wall = time.time()
        policy = self.referee.policy
        return [
            {
                "account": c.account,
                "name": c.name,
                "eid": c.eid,
                "ip": c.ip,
                "score": round(policy.score("acct:" + c.account, now), 3),
                "joined_at": round(wall - (now - c.opened_at), 3),  # Unix time (docs/fairplay.md)
                "connected_s": round(now - c.opened_at, 1),
            }
            for c in self.server.clients.values()
            if c.eid >= 0
        ]

    def kick_by_admin(self, account: str, reason: str, by: str) -> bool:
        n = self.kick(account, f"kicked by an operator: {reason}", banned=False)
        if n:
            self.referee.audit_admin("admin_kick", account, {"by": by, "reason": reason})
        return n > 0

    async def ban(
        self, account: str | None, ip_range: str | None, reason: str, duration_s: float | None, by: str
    ) -> dict[str, Any]:
        return self.referee.ban(account, ip_range, reason, duration_s, by).to_json()

    async def unban(self, account: str | None, ip_range: str | None, by: str) -> int:
        return await self.referee.unban(account, ip_range, by)

    async def bans(self, include_expired: bool) -> list[dict[str, Any]]:
        return [b.to_json() for b in await self.referee.store.list_bans(time.time(), include_expired)]

    async def audit(self, limit: int, account: str | None) -> list[dict[str, Any]]:
        await self.referee.store.flush(2.0)
        return [
            e.to_json() for e in await self.referee.store.read_audit(limit, account, None, self.server.cfg.campaign)
        ]


class AdminAdapter:
    """engine.security.admin.AdminBackend over ServerFairPlay (its `kick` is the Enforcer's)."""

    def __init__(self, fp: ServerFairPlay) -> None:
        self.fp = fp

    def players(self) -> list[dict[str, Any]]:
        return self.fp.players()

    def kick(self, account: str, reason: str, by: str) -> bool:
        return self.fp.kick_by_admin(account, reason, by)

    async def ban(
        self, account: str | None, ip_range: str | None, reason: str, duration_s: float | None, by: str
    ) -> dict[str, Any]:
        return await self.fp.ban(account, ip_range, reason, duration_s, by)

    async def unban(self, account: str | None, ip_range: str | None, by: str) -> int:
        return await self.fp.unban(account, ip_range, by)

    async def bans(self, include_expired: bool) -> list[dict[str, Any]]:
        return await self.fp.bans(include_expired)

    async def audit(self, limit: int, account: str | None) -> list[dict[str, Any]]:
        return await self.fp.audit(limit, account)
