"""The hub's HTTP conventions: JSON in and out, one error shape, and what every request goes through.

Errors are `{"error": code, "message": reason}` (plus `"field"` for a refused input) with the status:
400 bad_request, 401 unauthorized, 403 forbidden, 404 not_found, 405 method_not_allowed,
409 conflict, 413 payload_too_large, 429 too_many_requests (with Retry-After), 502 placement_failed,
503 unavailable (Redis or PostgreSQL down: the hub fails closed, it never guesses).

Nothing here logs a body, a header or a query string: passwords and tokens travel in bodies and
the Authorization header, and the access log is kept to method, route and status.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn

import asyncpg
from aiohttp import web
from aiohttp.web_exceptions import HTTPException

from engine.security.auth import AuthError
from hub.sessions import Principal, bearer
from hub.state import HUB_KEY
from hub.validate import Check, Invalid, fields, parse_json, query
from persistence.pg_rows import PgUnavailableError
from persistence.redis_layout import REDIS_DOWN

log = logging.getLogger("arbiter.hub.http")

_STATUS_CODES: Final[Mapping[int, str]] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 429: "too_many_requests",
    502: "placement_failed", 503: "unavailable",
}  # fmt: skip
PG_DOWN: Final = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
    PgUnavailableError,
)  # fmt: skip
PRINCIPAL_KEY: Final = web.RequestKey("arbiter_hub_principal", Principal)


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, field: str | None = None, retry_after: float | None = None,
        code: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.code = code or _STATUS_CODES.get(status, "error")


def refuse(status: int, message: str, **kw: Any) -> NoReturn:
    raise ApiError(status, message, **kw)


def _default(o: object) -> Any:
    if isinstance(o, dt.datetime):
        return o.timestamp()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False)


def ok(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def error_response(err: ApiError) -> web.Response:
    body: dict[str, Any] = {"error": err.code, "message": err.message}
    if err.field:
        body["field"] = err.field
    headers: dict[str, str] = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="arbiter-hub"'
    return ok(body, err.status, headers)


# -- middlewares ------------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_CORS_METHODS: Final = "GET, POST, PATCH, DELETE"
_METHODS: Final = frozenset({"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"})
_CORS_HEADERS: Final = "Authorization, Content-Type"


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Cross-origin calls from browsers (no credentials: the API takes bearer tokens only)."""
    origin = request.headers.get("Origin")
    allowed = request.app[HUB_KEY].cfg.cors_origins
    allow = "*" if "*" in allowed else (origin if origin in allowed else None)
    if origin is None or allow is None:
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": allow, "Access-Control-Allow-Methods": _CORS_METHODS,
            "Access-Control-Allow-Headers": _CORS_HEADERS, "Access-Control-Max-Age": "600", "Vary": "Origin",
        })  # fmt: skip
    resp = await handler(request)
    if not resp.prepared:  # a WebSocket upgrade has sent its headers already
        resp.headers["Access-Control-Allow-Origin"] = allow
        resp.headers["Access-Control-Expose-Headers"] = "Retry-After"
        resp.headers["Vary"] = "Origin"
    return resp


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in one JSON shape; dead stores become 503, never 500 nor a hang."""
    hub = request.app[HUB_KEY]
    route = _route(request)
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except ApiError as err:
        status = err.status
        return error_response(err)
    except Invalid as err:
        status = 400
        return error_response(ApiError(400, str(err), field=err.field or None))
    except AuthError as err:
        status = 401
        return error_response(ApiError(401, err.public_message))
    except HTTPException as exc:
        status = exc.status
        msg = f"the body is larger than {hub.cfg.max_body} bytes" if exc.status == 413 else exc.reason
        return error_response(ApiError(exc.status, msg))
    except REDIS_DOWN:
        status = 503
        hub.metrics.redis_errors.inc()
        return error_response(ApiError(503, "Redis is unavailable; try again shortly", retry_after=5))
    except PG_DOWN:
        status = 503
        return error_response(ApiError(503, "the database is unavailable; try again shortly", retry_after=5))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, route)
        return error_response(ApiError(500, "internal error", code="internal"))
    finally:
        method = request.method if request.method in _METHODS else "OTHER"  # labels stay bounded
        hub.metrics.requests.labels(method, route, str(status)).inc()
        hub.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


# -- request helpers --------------------------------------------------------------------------------
async def body(request: web.Request, spec: Mapping[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON body checked against `spec` (an empty body is `{}` when nothing is required)."""
    raw = await request.read()
    if not raw and not required:
        return {}
    ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if ctype not in ("application/json", ""):
        refuse(415, "send the body as application/json")
    return fields(parse_json(raw), spec, required)


def params(request: web.Request, spec: Mapping[str, Check]) -> dict[str, Any]:
    if len(request.query_string) > 2048:
        refuse(400, "the query string is too long")
    items = list(request.query.items())
    if len(items) != len({k for k, _ in items}):
        refuse(400, "a query parameter is repeated")
    return query(dict(items), spec)


def no_query(request: web.Request) -> None:
    if request.query_string:
        refuse(400, "this endpoint takes no query parameters")


def principal(request: web.Request) -> Principal:
    """The caller, from `Authorization: Bearer <access token>` (401 without a valid one)."""
    cached = request.get(PRINCIPAL_KEY)
    if cached is not None:
        return cached
    hub = request.app[HUB_KEY]
    who = hub.access.verify(bearer(request.headers.get("Authorization")))
    request[PRINCIPAL_KEY] = who
    return who


def admin(request: web.Request) -> Principal:
    who = principal(request)
    if not who.is_admin:
        refuse(403, "this endpoint is for admin accounts")
    return who


def client_ip(request: web.Request) -> str:
    hub = request.app[HUB_KEY]
    if hub.cfg.trust_forwarded:
        fwd = request.headers.get("X-Forwarded-For", "")
        if fwd:
            # The rightmost entry is the one our proxy added: the ones left of it are whatever the
            # client sent (proxies append), so a client could pick its own rate-limit key from them.
            return fwd.rsplit(",", 1)[-1].strip()[:64]
    return (request.remote or "unknown")[:64]


def user_agent(request: web.Request) -> str:
    return "".join(ch for ch in request.headers.get("User-Agent", "")[:200] if ch.isprintable())
