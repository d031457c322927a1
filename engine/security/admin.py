"""The admin API over HTTP for fair play: list and kick players, ban / unban, list bans, read the audit log.

An aiohttp application on its own listener: the game port's hand-written WebSocket path handles
only GET upgrades, and keeping operators off the players' port lets the admin port be bound to
loopback or a private network while the game port is public. See docs/fairplay.md (## Admin API).

Every request, including one for an unknown path (except the `open_get` routes a caller adds, e.g.
Prometheus' `GET /metrics`: the listener is internal), must carry `Authorization: Bearer <token>` with
an admin-role join token of this campaign (engine.security.auth.bearer_claims): 401 with
`WWW-Authenticate: Bearer` when it is missing or invalid, 403 for a valid token of another role.
Authentication runs before routing so an unauthenticated caller learns nothing about the routes.
Without a configured verifier (tokens off) every request gets 401: the admin API never falls back
to "open".

The game server supplies an `AdminBackend`. Its methods run on the event loop (the game state
belongs to the loop), so they must be quick or await; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import ipaddress
import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn, Protocol

from aiohttp import hdrs, web

from engine.security.auth import (
    ENV_KEYFILE,
    ENV_KEYS,
    ENV_SECRET,
    AuthCode,
    AuthError,
    TokenClaims,
    TokenVerifier,
    bearer_claims,
)
from engine.security.text import unsafe_char

log = logging.getLogger("arbiter.admin")

MAX_BODY_BYTES: Final = 16 * 1024  # every admin body is a few hundred bytes; more is a mistake or an attack
MAX_REASON_LEN: Final = 500
MAX_ACCOUNT_LEN: Final = 64
MAX_IP_RANGE_LEN: Final = 64  # the longest IPv6 CIDR is 43 characters
# Beyond this a backend's date arithmetic may overflow (datetime tops out at year 9999): ask for permanent.
MAX_BAN_DURATION_S: Final = 100 * 365 * 86400.0
DEFAULT_AUDIT_LIMIT: Final = 100
MAX_AUDIT_LIMIT: Final = 1000
SHUTDOWN_TIMEOUT_S: Final = 2.0  # a server stop must not wait a minute for an idle keep-alive admin client
REALM: Final = "arbiter-admin"

_BAN_FIELDS: Final = frozenset({"account", "ip_range", "reason", "duration_s"})
_KICK_FIELDS: Final = frozenset({"reason"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})

_HTTP_ERROR_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class AdminBackend(Protocol):
    def players(self) -> list[dict[str, Any]]: ...  # online players: account, name, eid, peer ip, score, joined_at
    def kick(self, account: str, reason: str, by: str) -> bool: ...  # False: not online
    async def ban(
        self, account: str | None, ip_range: str | None, reason: str, duration_s: float | None, by: str
    ) -> dict[str, Any]: ...  # the ban as JSON; kicks the account if online; ValueError on bad input
    async def unban(self, account: str | None, ip_range: str | None, by: str) -> int: ...  # bans lifted
    async def bans(self, include_expired: bool) -> list[dict[str, Any]]: ...
    async def audit(self, limit: int, account: str | None) -> list[dict[str, Any]]: ...


BACKEND_KEY: Final = web.AppKey("arbiter_admin_backend", AdminBackend)
VERIFIER_KEY: Final[web.AppKey[TokenVerifier | None]] = web.AppKey("arbiter_admin_verifier")
CLAIMS_KEY: Final = web.RequestKey("arbiter_admin_claims", TokenClaims)
OPEN_KEY: Final[web.AppKey[frozenset[str]]] = web.AppKey("arbiter_admin_open_paths")


# -- errors and JSON --------------------------------------------------------------------------------
class ApiError(Exception):
    """A refusal that becomes `{"error": code, "message": message}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _bad(message: str) -> NoReturn:
    raise ApiError(400, "bad_request", message)


def _json_default(o: object) -> Any:
    # Backends hand back rows from SQL or dataclasses; a datetime or an address in a row must not
    # turn a successful ban into a 500 after it was recorded.
    if isinstance(o, (dt.datetime, dt.date)):
        return o.isoformat()
    if isinstance(o, enum.Enum):
        return o.value
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response({"error": code, "message": message}, status=status, headers=headers)


def _reject_constant(c: str) -> Any:
    raise ValueError(f"{c} is not JSON")


# -- validation -------------------------------------------------------------------------------------
def _has_control(s: str, allow: str = "") -> bool:
    # Accounts and reasons end up in logs and operator consoles: no terminal escapes, no forged
    # lines, no bidirectional overrides that make an account read as another.
    return unsafe_char(s, allow) is not None


def _account(value: object, where: str) -> str:
    if not isinstance(value, str):
        _bad(f"{where} must be a string")
    if not 1 <= len(value) <= MAX_ACCOUNT_LEN or _has_control(value):
        _bad(f"{where} must be 1..{MAX_ACCOUNT_LEN} characters without control or bidirectional characters")
    return value


def _reason(value: object) -> str:
    if not isinstance(value, str):
        _bad("reason must be a string")
    if not value.strip() or len(value) > MAX_REASON_LEN or _has_control(value, allow="\t\n"):
        _bad(f"reason must be 1..{MAX_REASON_LEN} characters (not blank, no control characters)")
    return value


def _ip_range(value: object, where: str) -> str:
    if not isinstance(value, str):
        _bad(f"{where} must be a string")
    if not 1 <= len(value) <= MAX_IP_RANGE_LEN:
        _bad(f"{where} must be an IP address or CIDR range")
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        _bad(f"{where} must be an IP address or CIDR range")
    return value  # as given: the backend owns the canonical form it stores and matches


def _duration(value: object) -> float | None:
    if value is None:
        return None
    # bool is an int in Python; `true` is not a duration.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _bad("duration_s must be a number of seconds or null (permanent)")
    d = float(value)
    if not math.isfinite(d) or d <= 0:
        _bad("duration_s must be a finite positive number of seconds, or null (permanent)")
    if d > MAX_BAN_DURATION_S:
        _bad(f"duration_s must be at most {MAX_BAN_DURATION_S:.0f}; use null for a permanent ban")
    return d


async def json_body(request: web.Request, fields: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with only `fields`; 400 / 413 otherwise."""
    raw = await request.read()  # raises HTTPRequestEntityTooLarge (413) past client_max_size
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        _bad("the body must be a JSON object")
    if not isinstance(data, dict):
        _bad("the body must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        # A typo such as "duration" for "duration_s" would otherwise silently make a ban permanent.
        _bad(f"unknown field(s) {', '.join(repr(k[:32]) for k in unknown[:5])}; expected {sorted(fields)}")
    return data


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _bad(f"{name} must be 1/0 or true/false")


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_AUDIT_LIMIT
    try:
        limit = int(raw.strip())
    except ValueError:
        _bad(f"limit must be an integer in 1..{MAX_AUDIT_LIMIT}")
    if not 1 <= limit <= MAX_AUDIT_LIMIT:
        _bad(f"limit must be an integer in 1..{MAX_AUDIT_LIMIT}")
    return limit


def backend_of(request: web.Request) -> AdminBackend:
    """The app's backend, or, under /admin/campaigns/{campaign}/, that campaign's (404 if none runs)."""
    backend = request.app[BACKEND_KEY]
    cid = request.match_info.get("campaign")
    if cid is None:
        return backend
    find = getattr(backend, "for_campaign", None)
    found = find(cid) if find is not None else None
    if found is None:
        raise ApiError(404, "not_found", f"no campaign {cid[:64]!r} running here")
    return found


def _by(request: web.Request) -> str:
    return request[CLAIMS_KEY].account


# -- middlewares ------------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NO_KEY_MESSAGE: Final = (
    f"the admin API is disabled: it needs join-token keys ({ENV_SECRET}, {ENV_KEYS} or {ENV_KEYFILE}) "
    "configured on the server, and an admin token (`arbiter token --role admin`)"
)


def _challenge(auth_error: AuthError | None) -> dict[str, str]:
    # RFC 6750 §3: a request without credentials gets the bare challenge; a bad token gets invalid_token.
    if auth_error is None or auth_error.code is AuthCode.TOKEN_MISSING:
        return {hdrs.WWW_AUTHENTICATE: f'Bearer realm="{REALM}"'}
    return {hdrs.WWW_AUTHENTICATE: f'Bearer realm="{REALM}", error="invalid_token"'}


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a JSON error; never a stack trace or an HTML page."""
    try:
        return await handler(request)
    except ApiError as e:
        return _error(e.status, e.code, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # Keep Allow on a 405: it tells the caller which methods the path takes.
        keep = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        return _error(e.status, _HTTP_ERROR_CODES.get(e.status, "http_error"), e.reason, keep)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return _error(500, "internal", "internal error; see the server log")


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin-role bearer token on every request, before routing (unknown paths included)."""
    if request.method in ("GET", "HEAD") and request.path in request.app[OPEN_KEY]:
        return await handler(request)
    verifier = request.app[VERIFIER_KEY]
    if verifier is None:
        raise ApiError(401, "admin_disabled", _NO_KEY_MESSAGE, _challenge(None))
    try:
        # bearer_claims → TokenVerifier → PyJWT, whose HMAC check is hmac.compare_digest.
        claims = bearer_claims(request.headers.get(hdrs.AUTHORIZATION), verifier, role="admin")
    except AuthError as e:
        log.info("admin API refused %s %s from %s: %s", request.method, request.path, request.remote, e.detail)
        if e.http_status == 403:
            raise ApiError(403, "forbidden", "an admin-role token is required") from None
        raise ApiError(401, "unauthorized", e.public_message, _challenge(e)) from None
    request[CLAIMS_KEY] = claims
    return await handler(request)


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    # Player IPs and ban lists must not sit in a proxy or browser cache.
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"


# -- handlers ---------------------------------------------------------------------------------------
async def list_players(request: web.Request) -> web.Response:
    players = backend_of(request).players()
    return json_response({"players": players})


async def kick_player(request: web.Request) -> web.Response:
    account = _account(request.match_info["account"], "account")
    body = await json_body(request, _KICK_FIELDS)
    reason = _reason(body.get("reason"))
    by = _by(request)
    try:
        kicked = backend_of(request).kick(account, reason, by)
    except ValueError as e:
        _bad(str(e))
    if not kicked:
        raise ApiError(404, "not_online", f"{account!r} is not online")
    log.warning("admin %r kicked %r: %s", by, account, reason)
    return json_response({"kicked": account})


async def list_bans(request: web.Request) -> web.Response:
    include_expired = _flag(request, "include_expired")
    bans = await backend_of(request).bans(include_expired)
    return json_response({"bans": bans})


async def create_ban(request: web.Request) -> web.Response:
    body = await json_body(request, _BAN_FIELDS)
    account = _account(body["account"], "account") if body.get("account") is not None else None
    ip_range = _ip_range(body["ip_range"], "ip_range") if body.get("ip_range") is not None else None
    if account is None and ip_range is None:
        _bad("a ban needs an account, an ip_range, or both")
    reason = _reason(body.get("reason"))
    duration_s = _duration(body.get("duration_s"))
    by = _by(request)
    try:
        ban = await backend_of(request).ban(account, ip_range, reason, duration_s, by)
    except ValueError as e:
        _bad(str(e))
    log.warning(
        "admin %r banned account=%r ip_range=%r (%s): %s",
        by,
        account,
        ip_range,
        "permanent" if duration_s is None else f"{duration_s:g}s",
        reason,
    )
    return json_response({"ban": ban}, status=201)


async def _unban(request: web.Request, account: str | None, ip_range: str | None) -> web.Response:
    by = _by(request)
    try:
        lifted = await backend_of(request).unban(account, ip_range, by)
    except ValueError as e:
        _bad(str(e))
    log.warning("admin %r lifted %d ban(s) account=%r ip_range=%r", by, lifted, account, ip_range)
    # 200 with the count even when it is 0: DELETE is idempotent and the count says what happened.
    return json_response({"lifted": lifted})


async def delete_account_ban(request: web.Request) -> web.Response:
    return await _unban(request, _account(request.match_info["account"], "account"), None)


async def delete_ban(request: web.Request) -> web.Response:
    q = request.query
    account = _account(q["account"], "account") if "account" in q else None
    ip_range = _ip_range(q["ip_range"], "ip_range") if "ip_range" in q else None
    if account is None and ip_range is None:
        _bad("DELETE /admin/bans needs ?ip_range=... (or ?account=...); or use DELETE /admin/bans/{account}")
    return await _unban(request, account, ip_range)


async def read_audit(request: web.Request) -> web.Response:
    limit = _limit(request)
    account = _account(request.query["account"], "account") if "account" in request.query else None
    entries = await backend_of(request).audit(limit, account)
    return json_response({"audit": entries})


# -- application and server -------------------------------------------------------------------------
def make_app(
    backend: AdminBackend,
    verifier: TokenVerifier | None,
    open_get: Mapping[str, Handler] | None = None,
    routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """The admin aiohttp application (for start_admin, or to mount under another runner).
    `open_get`: GET routes served without a token (scrapers of an internal listener); `routes`:
    adds more (a host's campaign routes, engine/host_admin.py), behind the same token check."""
    app = web.Application(
        middlewares=[_errors_middleware, _auth_middleware],  # errors outermost: it also shapes 401/403
        client_max_size=MAX_BODY_BYTES,
    )
    app[BACKEND_KEY] = backend
    app[VERIFIER_KEY] = verifier
    app[OPEN_KEY] = frozenset(open_get or ())
    for path, route in (open_get or {}).items():
        app.router.add_get(path, route)
    app.on_response_prepare.append(_no_store)
    for prefix in ("/admin", "/admin/campaigns/{campaign}"):
        app.router.add_get(prefix + "/players", list_players)
        app.router.add_post(prefix + "/players/{account}/kick", kick_player)
        app.router.add_get(prefix + "/bans", list_bans)
        app.router.add_post(prefix + "/bans", create_ban)
        app.router.add_delete(prefix + "/bans", delete_ban)
        app.router.add_delete(prefix + "/bans/{account}", delete_account_ban)
        app.router.add_get(prefix + "/audit", read_audit)
    if routes is not None:
        routes(app)
    return app


class AdminServer:
    """A running admin listener. `port` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and finish in-flight requests (at most SHUTDOWN_TIMEOUT_S). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_admin(
    backend: AdminBackend,
    verifier: TokenVerifier | None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    open_get: Mapping[str, Handler] | None = None,
    routes: Callable[[web.Application], None] | None = None,
) -> AdminServer:
    """Serve the admin API on host:port on the running loop; `await server.close()` to stop."""
    if verifier is None:
        log.warning("admin API on %s:%s answers 401 to everything: %s", host, port, _NO_KEY_MESSAGE)
    if ssl_context is None and not _is_loopback(host):
        # Bearer tokens are credentials: off loopback they need TLS here or in a proxy in front.
        log.warning("admin API on %s without TLS: bearer tokens cross the network in clear text", host)
    runner = web.AppRunner(make_app(backend, verifier, open_get, routes), shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0]
    except BaseException:
        await runner.cleanup()
        raise
    server = AdminServer(runner, host, int(bound[1]))
    log.info("admin API listening on %s", server.url)
    return server
