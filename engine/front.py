"""The front of a process: the handler of its listening port (netcode.ws_server.ConnectionHandler).

It owns the door (engine/door.py: global and per-address caps, deadlines), answers HTTP (the
host's own routes, and `/c/{campaign}/...` handed to that campaign), and keeps the lobby: the
connections that have not said which campaign they are for. A connection on `/c/{campaign}/` of a
loaded campaign, or any connection of `arbiter serve`, goes to its campaign as it opens; one on `/`
waits for its hello, whose join token names the campaign (engine/routing.py); one whose campaign
hibernates waits for the wake. Then the campaign adopts it: its handler is switched, so every later
frame goes straight to the campaign.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.clients import Client, flush_session
from engine.door import Door
from engine.metrics import process_metrics
from engine.routing import split_campaign_path, token_audience
from engine.security.auth import AuthError, TokenVerifier
from engine.security.fairplay.server_hooks import peer_ip
from engine.server_stats import full_stats_answer, host_stats
from netcode.protocol import PROTOCOL_VERSION, CloseCode, ErrorCode
from netcode.session import HelloEvent, PingEvent, ServerSession
from netcode.signaling import MAX_SIGNAL_FRAME
from netcode.ws_server import HttpAnswer, WsServerConnection

if TYPE_CHECKING:
    from engine.config import ServerConfig
    from engine.host import Host
    from engine.server import GameServer

log = logging.getLogger("arbiter.front")


@dataclass(slots=True, eq=False)
class Lobby:
    """A connection that has not said which campaign it is for yet (or whose campaign is waking)."""

    client: Client
    target: str | None  # from its path


class Front:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.door = Door(self)
        self.lobby: dict[WsServerConnection, Lobby] = {}

    @property
    def cfg(self) -> ServerConfig:
        return self.host.cfg

    @property
    def accepting(self) -> bool:
        return self.host.accepting

    def admit_tcp(self, ip: str, now: float) -> str | None:
        """At TCP accept: why the address may not connect now, or None (the port's per-address caps)."""
        host = self.host
        if host.single is not None:
            return host.single.fairplay.admit_tcp(ip)  # its referee also scores the flood
        return host.shared.conn_limiter.allow(ip, now)

    def waiting_for(self, cid: str) -> bool:
        return any(lb.target == cid for lb in self.lobby.values())

    def deadlines(self, now: float) -> None:
        """The door's upgrade deadline, and the lobby's handshake and idle deadlines."""
        self.door.deadlines(now)
        for conn, lb in list(self.lobby.items()):
            session = lb.client.session
            session.poll(now)
            if session.close_code is not None and conn.is_open:
                flush_session(lb.client)
                conn.close(session.close_code, session.close_reason)
            elif now - lb.client.last_rx_time > self.cfg.idle_timeout:
                conn.abort()

    def close_lobby(self, reason: str) -> None:
        for lb in list(self.lobby.values()):
            lb.client.session.send_bye(reason, CloseCode.GOING_AWAY)
            flush_session(lb.client)
            lb.client.conn.close(CloseCode.GOING_AWAY, reason)

    # -- ConnectionHandler ----------------------------------------------------------------------------
    def on_connect(self, conn: WsServerConnection) -> bool:
        return self.door.accept(conn, self.host.now())

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        self.door.error(conn, cause, exc, self.host.now())

    def http_request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> HttpAnswer | None:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        host = self.host
        route, _, query = path.partition("?")
        if route == "/metrics" and self.cfg.metrics_on_game_port:
            text, ctype = process_metrics().exposition()
            return 200, ctype, text
        cid, rest = split_campaign_path(route)
        if cid is not None:
            return self._campaign_http(cid, rest or "/", query, headers, method)
        if host.single is not None:
            return host.single.http_request(path, headers, method)
        if route == "/health":
            ok = host.accepting
            body = {"status": "ok" if ok else "stopping", "campaigns": len(host.loaded())}
            return (200 if ok else 503), "application/json", json.dumps(body).encode()
        if route == "/stats":
            return 200, "application/json", json.dumps(host_stats(host)).encode()
        if route == "/stats/full":
            return self._full_stats((headers or {}).get("authorization"))
        if route == "/info":
            info: dict[str, object] = {"host": host.name, "protocol_version": PROTOCOL_VERSION,
                                       "tick_rate": self.cfg.tick_rate, "send_rate": self.cfg.send_rate,
                                       "campaigns": sorted(host.entries)}  # fmt: skip
            return 200, "application/json", json.dumps(info).encode()
        if route in ("/", "/ws"):
            return None if host.accepting else (503, "text/plain", b"shutting down\n")
        if route.rstrip("/") in ("/play", "/watch"):
            return 404, "text/plain", b"this host runs many campaigns: open /c/{campaign}/play or /c/{campaign}/watch\n"
        return host.web.answer(path)

    def _campaign_http(
        self, cid: str, rest: str, query: str, headers: Mapping[str, str] | None, method: str
    ) -> HttpAnswer | None:
        host = self.host
        e = host.entries.get(cid)
        if e is None:
            return 404, "text/plain", b"no such campaign on this host\n"
        target = rest + ("?" + query if query else "")
        if e.server is not None and e.state == "running":
            return e.server.http_request(target, headers, method)
        if rest in ("/", "/ws"):  # a hibernated campaign wakes at the hello
            return None if host.accepting else (503, "text/plain", b"shutting down\n")
        spec = e.spec
        if rest == "/info":
            body = {"game": spec.game, "campaign": cid, "protocol_version": PROTOCOL_VERSION,
                    "tick_rate": self.cfg.tick_rate, "send_rate": self.cfg.send_rate, "state": e.state}  # fmt: skip
            return 200, "application/json", json.dumps(body).encode()
        if rest in ("/health", "/stats"):
            body = {"status": e.state, "campaign": cid, "game": spec.game, "ccu": 0}
            return 200, "application/json", json.dumps(body).encode()
        return host.pages(e).answer(target)

    def _full_stats(self, authorization: str | None) -> HttpAnswer:
        host = self.host
        return full_stats_answer(authorization, host.admin_verifier, lambda: host_stats(host, full=True))

    def on_open(self, conn: WsServerConnection) -> None:
        host = self.host
        cid, _ = split_campaign_path(conn.path.split("?", 1)[0])
        if cid is None and host.single is not None:
            host.single.on_open(conn)
            return
        server = host.server(cid) if cid else None
        if server is not None:
            server.on_open(conn)
            return
        now = host.now()
        cfg = self.cfg
        session = ServerSession(
            max_offences=cfg.max_offences, max_frame=cfg.max_frame, rate=cfg.input_rate, burst=cfg.input_burst,
            handshake_timeout=cfg.handshake_timeout, opened_at=now,
            max_signal_frame=MAX_SIGNAL_FRAME if host.rtc is not None else 0,
        )  # fmt: skip
        self.lobby[conn] = Lobby(Client(conn, session, now, last_rx_time=now, ip=peer_ip(conn)), cid or None)

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None:
        """A frame of a connection that has not joined a campaign yet."""
        lb = self.lobby.get(conn)
        if lb is None:
            return
        now = self.host.now()
        client = lb.client
        session = client.session
        client.last_rx_time = now
        for ev in session.receive(payload if not is_text else payload.decode("utf-8", "replace"), now):
            if type(ev) is HelloEvent:
                self._route(lb, ev)
            elif type(ev) is PingEvent:
                session.pong(ev.client_time, now * 1000.0, 0)
        if conn in self.lobby:
            flush_session(client)
            if session.close_code is not None:
                conn.close(int(session.close_code), session.close_reason or "")

    def on_close(self, conn: WsServerConnection) -> None:
        """A connection that never reached a campaign is gone."""
        admitted = self.door.closed(conn)
        self.lobby.pop(conn, None)
        self.host.shared.conn_limiter.closed(peer_ip(conn), admitted)

    # -- routing --------------------------------------------------------------------------------------
    def _route(self, lb: Lobby, ev: HelloEvent) -> None:
        session = lb.client.session
        cid = lb.target or token_audience(ev.token)
        if not cid:
            session.reject(ErrorCode.UNKNOWN_CAMPAIGN, "this host runs many campaigns: connect to /c/{campaign}/ "
                           "or send a join token that names one", CloseCode.UNKNOWN_CAMPAIGN)  # fmt: skip
            return
        if cid not in self.host.entries:
            session.reject(ErrorCode.UNKNOWN_CAMPAIGN, f"no campaign {cid!r} on this host", CloseCode.UNKNOWN_CAMPAIGN)
            return
        lb.target = cid
        server = self.host.server(cid)
        if server is not None:
            self._hand_over(lb, server, ev)
            return
        # Waking costs memory and a recovery: only for a hello its campaign would let in (the token is
        # checked here without being used up; the campaign checks it again, and uses it).
        ring = self.host.ring
        if ring is not None and not (ev.watch and self.cfg.watch_public):
            try:
                TokenVerifier(ring, cid).verify(ev.token, consume=False)
            except AuthError as e:
                session.reject(int(e.code), e.public_message, CloseCode.UNAUTHORIZED)
                return
        self.host.spawn(self._wake_for(lb, cid, ev))

    async def _wake_for(self, lb: Lobby, cid: str, ev: HelloEvent) -> None:
        from engine.host import PlacementRefusedError

        client = lb.client
        try:
            server = await self.host.ensure_loaded(cid)
        except PlacementRefusedError as exc:
            client.session.reject(ErrorCode.SERVER_FULL, str(exc), CloseCode.SERVER_FULL)
        except Exception as exc:
            log.exception("campaign %s could not be woken", cid)
            client.session.reject(ErrorCode.SERVER_FULL, f"campaign {cid} is not available ({type(exc).__name__})",
                                  CloseCode.SERVER_FULL)  # fmt: skip
        else:
            if client.conn in self.lobby and client.conn.is_open:
                self._hand_over(lb, server, ev)
                return
        if client.conn in self.lobby:
            flush_session(client)
            client.conn.close(int(client.session.close_code or CloseCode.SERVER_FULL), client.session.close_reason)

    def _hand_over(self, lb: Lobby, server: GameServer, ev: HelloEvent) -> None:
        client = lb.client
        conn = client.conn
        del self.lobby[conn]
        server.adopt(client)
        server.hello(client, ev)
        flush_session(client)
        if client.session.close_code is not None:
            conn.close(int(client.session.close_code), client.session.close_reason or "")
