"""Admin HTTP API: bearer auth on every route (401/403), each route against an in-memory backend, bad input."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from engine.security.admin import MAX_BODY_BYTES, AdminServer, start_admin
from engine.security.auth import KeyRing, TokenIssuer, TokenVerifier
from tests.tokens import Tokens

RING, OTHER = Tokens().ring, Tokens().other  # tests/tokens.py
CAMPAIGN = "camp"


class MemoryBackend:
    """An AdminBackend in a dict; records every call with its `by`."""

    def __init__(self) -> None:
        self.online: dict[str, dict[str, Any]] = {
            "alice": {"account": "alice", "name": "Alice", "eid": 7, "ip": "10.0.0.5", "score": 3, "joined_at": 1.0},
        }
        self.ban_list: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.gate: asyncio.Event | None = None  # when set, ban() waits on it (a slow database)
        self.fail: Exception | None = None

    def _audit(self, action: str, by: str, **kw: Any) -> None:
        self.log.append({"action": action, "by": by, **kw})

    def players(self) -> list[dict[str, Any]]:
        self.calls.append(("players",))
        return list(self.online.values())

    def kick(self, account: str, reason: str, by: str) -> bool:
        self.calls.append(("kick", account, reason, by))
        if self.online.pop(account, None) is None:
            return False
        self._audit("kick", by, account=account, reason=reason)
        return True

    async def ban(
        self, account: str | None, ip_range: str | None, reason: str, duration_s: float | None, by: str
    ) -> dict[str, Any]:
        self.calls.append(("ban", account, ip_range, reason, duration_s, by))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if account == "nobody":
            raise ValueError("no such account")
        ban: dict[str, Any] = {"id": len(self.ban_list) + 1, "account": account, "ip_range": ip_range, "by": by}
        ban |= {"reason": reason, "expires_at": None if duration_s is None else 1000.0 + duration_s}
        self.ban_list.append(ban)
        if account is not None:
            self.online.pop(account, None)
        self._audit("ban", by, account=account)
        return ban

    async def unban(self, account: str | None, ip_range: str | None, by: str) -> int:
        self.calls.append(("unban", account, ip_range, by))
        hit = [b for b in self.ban_list if (account, ip_range) in ((b["account"], None), (None, b["ip_range"]))]
        for b in hit:
            self.ban_list.remove(b)
        self._audit("unban", by, account=account)
        return len(hit)

    async def bans(self, include_expired: bool) -> list[dict[str, Any]]:
        self.calls.append(("bans", include_expired))
        return list(self.ban_list)

    async def audit(self, limit: int, account: str | None) -> list[dict[str, Any]]:
        self.calls.append(("audit", limit, account))
        rows = [e for e in self.log if account is None or e.get("account") == account]
        return rows[-limit:]


def token(role: str = "admin", account: str = "ops", ring: KeyRing = RING, **kw: Any) -> str:
    return TokenIssuer(ring).issue(account, kw.pop("campaign", CAMPAIGN), role=role, ttl=kw.pop("ttl", 600), **kw)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


ADMIN = auth(token())

# (method, path, json body) for every route
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/admin/players", None),
    ("POST", "/admin/players/alice/kick", {"reason": "x"}),
    ("GET", "/admin/bans?include_expired=1", None),
    ("POST", "/admin/bans", {"account": "alice", "reason": "x"}),
    ("DELETE", "/admin/bans/alice", None),
    ("DELETE", "/admin/bans?ip_range=10.0.0.0/8", None),
    ("GET", "/admin/audit?limit=5", None),
]


@pytest.fixture(autouse=True)
def _warm_kernels() -> None:
    """Overrides conftest's numba warm-up: the admin API never touches the sim, so skip compiling it."""


@pytest.fixture
async def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
async def server(backend: MemoryBackend) -> AsyncIterator[AdminServer]:
    srv = await start_admin(backend, TokenVerifier(RING, CAMPAIGN), "127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def call(
    http: aiohttp.ClientSession,
    srv: AdminServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any, Any]:
    kw: dict[str, Any] = {"headers": headers or {}}
    if data is not None:
        kw["data"] = data
    elif body is not None:
        kw["json"] = body
    async with http.request(method, srv.url + path, **kw) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        assert r.headers["Cache-Control"] == "no-store"
        return r.status, await r.json(), r.headers


# -- authentication ---------------------------------------------------------------------------------
BAD_CREDENTIALS = {
    "none": {},
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": "Basic b3BzOnNlY3JldA=="},
    "garbage": auth("not.a.jwt"),
    "forged (other key)": auth(token(ring=OTHER)),
    "forged (alg none)": auth("eyJhbGciOiJub25lIiwia2lkIjoiZGVmYXVsdCJ9.eyJzdWIiOiJvcHMiLCJyb2xlIjoiYWRtaW4ifQ."),
    "expired": auth(token(ttl=60, now=time.time() - 3600)),
    "other campaign": auth(token(campaign="elsewhere")),
}


async def test_every_route_refuses_bad_credentials_with_401_and_player_tokens_with_403(
    server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession
) -> None:
    player = auth(token(role="player", account="alice"))
    for method, path, body in [*ROUTES, ("GET", "/admin/nope", None), ("PUT", "/admin/players", None)]:
        for label, headers in BAD_CREDENTIALS.items():
            status, data, h = await call(http, server, method, path, body, headers)
            assert status == 401, (method, path, label, data)
            assert data["error"] == "unauthorized" and data["message"]
            assert h["WWW-Authenticate"].startswith("Bearer"), (path, label)
        status, data, _ = await call(http, server, method, path, body, player)
        assert (status, data["error"]) == (403, "forbidden"), (method, path)
    assert backend.calls == []  # nothing reached the backend
    assert "alice" in backend.online


async def test_no_verifier_means_every_route_401_with_configuration_hint(
    backend: MemoryBackend, http: aiohttp.ClientSession
) -> None:
    srv = await start_admin(backend, None, "127.0.0.1", 0)
    try:
        for method, path, body in ROUTES:
            status, data, h = await call(http, srv, method, path, body, ADMIN)
            assert status == 401 and data["error"] == "admin_disabled"
            assert "ARBITER_JWT_SECRET" in data["message"]
            assert h["WWW-Authenticate"].startswith("Bearer")
    finally:
        await srv.close()
    assert backend.calls == []


async def test_token_signature_is_checked_with_compare_digest(
    server: AdminServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    status, _, _ = await call(http, server, "GET", "/admin/players", headers=ADMIN)
    assert status == 200 and seen


# -- each route with an admin token -----------------------------------------------------------------
async def test_players_and_kick(server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession) -> None:
    status, data, _ = await call(http, server, "GET", "/admin/players", headers=ADMIN)
    assert status == 200 and [p["account"] for p in data["players"]] == ["alice"]

    status, data, _ = await call(http, server, "POST", "/admin/players/alice/kick", {"reason": "speedhack"}, ADMIN)
    assert (status, data) == (200, {"kicked": "alice"})
    assert backend.calls[-1] == ("kick", "alice", "speedhack", "ops")

    status, data, _ = await call(http, server, "POST", "/admin/players/alice/kick", {"reason": "again"}, ADMIN)
    assert (status, data["error"]) == (404, "not_online")


async def test_ban_list_unban_and_audit(
    server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession
) -> None:
    mod = auth(token(account="mod-7"))
    status, data, _ = await call(
        http, server, "POST", "/admin/bans", {"account": "alice", "reason": "dupe", "duration_s": 3600}, mod
    )
    assert status == 201 and data["ban"]["account"] == "alice" and data["ban"]["by"] == "mod-7"
    assert backend.calls[-1] == ("ban", "alice", None, "dupe", 3600.0, "mod-7")
    assert "alice" not in backend.online

    permanent = [{"ip_range": "10.0.0.0/8", "reason": "botnet"}, {"ip_range": "::1", "reason": "r", "duration_s": None}]
    for body in permanent:
        status, data, _ = await call(http, server, "POST", "/admin/bans", body, ADMIN)
        assert status == 201 and data["ban"]["expires_at"] is None  # absent or null: permanent
    assert backend.calls[-1] == ("ban", None, "::1", "r", None, "ops")

    status, data, _ = await call(http, server, "GET", "/admin/bans", headers=ADMIN)
    assert status == 200 and len(data["bans"]) == 3 and backend.calls[-1] == ("bans", False)
    for q, flag in (("1", True), ("true", True), ("0", False)):
        await call(http, server, "GET", f"/admin/bans?include_expired={q}", headers=ADMIN)
        assert backend.calls[-1] == ("bans", flag)

    status, data, _ = await call(http, server, "DELETE", "/admin/bans/alice", headers=mod)
    assert (status, data) == (200, {"lifted": 1}) and backend.calls[-1] == ("unban", "alice", None, "mod-7")
    status, data, _ = await call(http, server, "DELETE", "/admin/bans?ip_range=10.0.0.0/8", headers=ADMIN)
    assert (status, data) == (200, {"lifted": 1}) and backend.calls[-1] == ("unban", None, "10.0.0.0/8", "ops")
    status, data, _ = await call(http, server, "DELETE", "/admin/bans/alice", headers=ADMIN)
    assert (status, data) == (200, {"lifted": 0})  # idempotent

    status, data, _ = await call(http, server, "GET", "/admin/audit", headers=ADMIN)
    assert status == 200 and backend.calls[-1] == ("audit", 100, None)
    assert [e["by"] for e in data["audit"]] == ["mod-7", "ops", "ops", "mod-7", "ops", "ops"]
    status, data, _ = await call(http, server, "GET", "/admin/audit?limit=2&account=alice", headers=ADMIN)
    assert status == 200 and backend.calls[-1] == ("audit", 2, "alice")
    assert [e["action"] for e in data["audit"]] == ["unban", "unban"]


async def test_a_slow_backend_does_not_block_other_requests(
    server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession
) -> None:
    backend.gate = asyncio.Event()
    slow = asyncio.create_task(call(http, server, "POST", "/admin/bans", {"account": "bob", "reason": "r"}, ADMIN))
    while not any(c[0] == "ban" for c in backend.calls):
        await asyncio.sleep(0.005)
    status, _, _ = await call(http, server, "GET", "/admin/players", headers=ADMIN)
    assert status == 200 and not slow.done()
    backend.gate.set()
    status, _, _ = await slow
    assert status == 201


# -- bad input --------------------------------------------------------------------------------------
BAD_BAN_BODIES: list[Any] = [
    {"reason": "no target"},
    {"account": "alice"},  # no reason
    {"account": "alice", "reason": ""},
    {"account": "alice", "reason": "   "},
    {"account": "alice", "reason": 5},
    {"account": "alice", "reason": "r" * 501},
    {"account": "alice", "reason": "line\x1b[2Jclear"},
    {"account": "eve\u202egnp.exe", "reason": "r"},  # a right-to-left override: reads as another name
    {"account": "ali\u200bce", "reason": "r"},  # a zero-width space: looks like "alice"
    {"account": "alice", "reason": "fine \u2066hidden\u2069"},
    {"account": 42, "reason": "r"},
    {"account": "", "reason": "r"},
    {"account": "a" * 65, "reason": "r"},
    {"account": ["alice"], "reason": "r"},
    {"ip_range": "not-an-ip", "reason": "r"},
    {"ip_range": 167772160, "reason": "r"},
    {"account": "alice", "reason": "r", "duration_s": "3600"},
    {"account": "alice", "reason": "r", "duration_s": True},
    {"account": "alice", "reason": "r", "duration_s": 0},
    {"account": "alice", "reason": "r", "duration_s": -5},
    {"account": "alice", "reason": "r", "duration_s": 1e300},
    {"account": "alice", "reason": "r", "duration": 60},  # a typo must not become a permanent ban
    {"account": "nobody", "reason": "r"},  # the backend's ValueError
    ["alice"],
    "alice",
    None,
]

BAD_RAW_BODIES: list[bytes] = [
    b"",
    b"{not json",
    b'{"account": "alice", "reason": "r", "duration_s": NaN}',
    b'{"account": "alice", "reason": "r", "duration_s": Infinity}',
    b'{"account": "alice", "reason": "r", "duration_s": 1e999}',  # parses as inf
    b'{"account": "alice", "reason": "\xff\xfe"}',
    b"[" * 8_000 + b"]" * 8_000,  # fits the size limit; too deep for the parser
]


async def test_bad_bodies_and_queries_are_400(
    server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession
) -> None:
    for body in BAD_BAN_BODIES:
        status, data, _ = await call(http, server, "POST", "/admin/bans", data=json.dumps(body).encode(), headers=ADMIN)
        assert (status, data["error"]) == (400, "bad_request"), body
        assert data["message"]
    for raw in BAD_RAW_BODIES:
        status, data, _ = await call(http, server, "POST", "/admin/bans", data=raw, headers=ADMIN)
        assert (status, data["error"]) == (400, "bad_request"), raw[:40]
    for raw in (b"", b"{}", b'{"reason": null}', b'{"reason": "r", "extra": 1}'):
        status, data, _ = await call(http, server, "POST", "/admin/players/alice/kick", data=raw, headers=ADMIN)
        assert status == 400, raw
    long_account = "/admin/players/" + "a" * 65 + "/kick"
    for method, path in [
        ("POST", long_account),
        ("DELETE", "/admin/bans/" + "a" * 65),
        ("DELETE", "/admin/bans"),
        ("DELETE", "/admin/bans?ip_range=nope"),
        ("GET", "/admin/bans?include_expired=maybe"),
        ("GET", "/admin/audit?limit=0"),
        ("GET", "/admin/audit?limit=1001"),
        ("GET", "/admin/audit?limit=ten"),
        ("GET", "/admin/audit?account=" + "a" * 65),
    ]:
        status, data, _ = await call(http, server, method, path, {"reason": "r"}, ADMIN)
        assert (status, data["error"]) == (400, "bad_request"), path
    assert "alice" in backend.online and not backend.ban_list
    assert [c for c in backend.calls if c[0] != "ban"] == []  # only the backend-ValueError case got through
    # The largest legal request still fits.
    status, _, _ = await call(http, server, "GET", "/admin/audit?limit=1000", headers=ADMIN)
    assert status == 200


async def test_huge_body_is_413(server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession) -> None:
    big = json.dumps({"account": "alice", "reason": "r" * (MAX_BODY_BYTES + 1)}).encode()
    status, data, _ = await call(http, server, "POST", "/admin/bans", data=big, headers=ADMIN)
    assert (status, data["error"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds for streamed bodies too
        for _ in range(64):
            yield b" " * 1024

    status, data, _ = await call(http, server, "POST", "/admin/players/alice/kick", data=chunks(), headers=ADMIN)  # type: ignore[arg-type]
    assert status == 413
    assert backend.calls == []


async def test_unknown_route_404_wrong_method_405_backend_crash_500(
    server: AdminServer, backend: MemoryBackend, http: aiohttp.ClientSession
) -> None:
    status, data, _ = await call(http, server, "GET", "/admin/nope", headers=ADMIN)
    assert (status, data["error"]) == (404, "not_found")
    status, data, h = await call(http, server, "PUT", "/admin/bans", {"reason": "r"}, ADMIN)
    assert (status, data["error"]) == (405, "method_not_allowed")
    assert {"GET", "POST", "DELETE"} <= set(h["Allow"].replace(" ", "").split(","))
    backend.fail = RuntimeError("database on fire: password=hunter2")
    status, data, _ = await call(http, server, "POST", "/admin/bans", {"account": "bob", "reason": "r"}, ADMIN)
    assert (status, data["error"]) == (500, "internal") and "hunter2" not in json.dumps(data)


async def test_port_zero_binds_and_close_releases(backend: MemoryBackend, http: aiohttp.ClientSession) -> None:
    srv = await start_admin(backend, TokenVerifier(RING, CAMPAIGN), "127.0.0.1", 0)
    assert srv.port > 0
    await srv.close()
    await srv.close()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(srv.url + "/admin/players", headers=ADMIN)
