"""The admin API (engine/security/admin.py, docs/fairplay.md) against a real GameServer: its own listener
(admin_port=0), join tokens on, players connected over real sockets.

Every route refuses a caller without a token (401) or with a player's token (403) and changes
nothing; with an admin token an operator lists the players, kicks one (4005), bans an account (the
connected client is closed with err 21 + 4007, its next hello refused), lists the ban, lifts it (the
player is back), bans and lifts an address range, and reads each action back from the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import msgpack
import pytest

from engine.security.auth import TokenIssuer, TokenVerifier
from engine.server import GameServer
from netcode.client import ArbiterClient, ServerError
from netcode.protocol import CloseCode, ErrorCode
from netcode.ws_client import ws_connect
from tests.serverutil import running_server, url, wait_for
from tests.tokens import Tokens

RING, OTHER_RING = Tokens().ring, Tokens().other  # tests/tokens.py
CAMP = "admin-e2e"
ISSUER = TokenIssuer(RING)

ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/admin/players", None),
    ("POST", "/admin/players/alice/kick", {"reason": "x"}),
    ("GET", "/admin/bans?include_expired=1", None),
    ("POST", "/admin/bans", {"account": "alice", "reason": "x"}),
    ("DELETE", "/admin/bans/alice", None),
    ("DELETE", "/admin/bans?ip_range=127.0.0.1", None),
    ("GET", "/admin/audit?limit=5", None),
    ("GET", "/admin/no-such-route", None),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ISSUER.issue("ops", CAMP, role="admin", ttl=600))


def admin_server(**overrides: Any) -> contextlib.AbstractAsyncContextManager[GameServer]:
    return running_server(TokenVerifier(RING, CAMP), admin_port=0, campaign=CAMP, game="wander",
                          game_config={"npcs": 5}, **overrides)  # fmt: skip


async def join(server: GameServer, account: str) -> ArbiterClient:
    """A player's connection with a fresh join token (tokens are single-use)."""
    return await ArbiterClient.connect(url(server), account, ISSUER.issue(account, CAMP, ttl=60))


async def call(
    http: aiohttp.ClientSession, server: GameServer, method: str, path: str, body: Any = None, headers: Any = None
) -> tuple[int, dict[str, Any], Any]:
    assert server.admin is not None
    headers = ADMIN if headers is None else headers
    async with http.request(method, server.admin.url + path, json=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.json()


async def test_every_route_refuses_a_caller_without_an_admin_token() -> None:
    player = bearer(ISSUER.issue("alice", CAMP, ttl=600))
    bad_admins = [
        bearer(TokenIssuer(OTHER_RING).issue("ops", CAMP, role="admin")),  # forged
        bearer(ISSUER.issue("ops", CAMP, role="admin", ttl=60, now=time.time() - 3600)),  # expired
        bearer(ISSUER.issue("ops", "another-campaign", role="admin")),  # another campaign's
        {"Authorization": "Basic b3BzOm9wcw=="},  # another scheme
    ]
    async with admin_server() as server, aiohttp.ClientSession() as http:
        alice = await join(server, "alice")
        for method, path, body in ROUTES:
            status, headers, data = await call(http, server, method, path, body, headers={})
            assert status == 401 and data["error"] == "unauthorized", (method, path, status, data)
            assert headers["WWW-Authenticate"].startswith("Bearer"), headers
            status, _, data = await call(http, server, method, path, body, headers=player)
            assert status == 403 and data["error"] == "forbidden", (method, path, status, data)
            for h in bad_admins:
                status, _, data = await call(http, server, method, path, body, headers=h)
                assert status == 401, (method, path, h, status, data)
        # None of it did anything.
        assert alice.is_open
        referee = server.fairplay.referee
        assert len(referee.bans) == 0 and not await referee.store.list_bans(time.time(), True)
        assert await referee.store.flush(2.0)
        assert not await referee.store.read_audit(100)
        await alice.close()


async def test_operator_lists_kicks_bans_and_unbans_a_player() -> None:
    async with admin_server() as server, aiohttp.ClientSession() as http:
        alice = await join(server, "alice")
        bob = await join(server, "bob")

        status, _, data = await call(http, server, "GET", "/admin/players")
        assert status == 200
        rows = {p["account"]: p for p in data["players"]}
        assert set(rows) == {"alice", "bob"}
        assert rows["alice"]["eid"] == alice.player and rows["alice"]["ip"] == "127.0.0.1"
        assert rows["alice"]["name"] == "alice" and rows["alice"]["score"] == 0
        assert rows["alice"]["joined_at"] == pytest.approx(time.time(), abs=60)

        # kick: 4005; a kick is not a ban, the player may come back
        status, _, data = await call(http, server, "POST", "/admin/players/alice/kick", {"reason": "afk farming"})
        assert (status, data) == (200, {"kicked": "alice"})
        code, _ = await alice.wait_closed()
        assert code == CloseCode.KICKED and alice.bye is not None and "afk farming" in alice.bye.reason
        await wait_for(lambda: "alice" not in server.campaign.accounts)
        status, _, data = await call(http, server, "POST", "/admin/players/alice/kick", {"reason": "again"})
        assert (status, data["error"]) == (404, "not_online")
        alice = await join(server, "alice")

        # ban: the connected client gets err 21 and 4007, the next hello is refused
        ban = {"account": "alice", "reason": "resource duplication", "duration_s": 3600}
        status, _, data = await call(http, server, "POST", "/admin/bans", ban)
        assert status == 201 and data["ban"]["account"] == "alice", data
        code, _ = await alice.wait_closed()
        assert code == CloseCode.BANNED and ErrorCode.BANNED in [e.code for e in alice.errors]
        with pytest.raises(ServerError) as exc:
            await join(server, "alice")
        assert exc.value.code == ErrorCode.BANNED and "banned until" in exc.value.msg

        status, _, data = await call(http, server, "GET", "/admin/bans")
        assert status == 200 and len(data["bans"]) == 1, data
        b = data["bans"][0]
        assert (b["account"], b["reason"], b["created_by"], b["campaign"]) == (
            "alice",
            "resource duplication",
            "ops",
            CAMP,
        )
        assert b["until"] == pytest.approx(time.time() + 3600, abs=60) and b["ban_id"] > 0

        # unban: the player is back; the lifted ban stays in the history
        status, _, data = await call(http, server, "DELETE", "/admin/bans/alice")
        assert (status, data) == (200, {"lifted": 1})
        alice = await join(server, "alice")
        await alice.next_snapshot()
        status, _, data = await call(http, server, "DELETE", "/admin/bans/alice")
        assert (status, data) == (200, {"lifted": 0})  # idempotent
        status, _, data = await call(http, server, "GET", "/admin/bans")
        assert data["bans"] == []
        status, _, data = await call(http, server, "GET", "/admin/bans?include_expired=1")
        assert [(b["account"], b["lifted_by"]) for b in data["bans"]] == [("alice", "ops")]

        # the audit log: who did what, to whom
        status, _, data = await call(http, server, "GET", "/admin/audit")
        assert status == 200
        entries = sorted(data["audit"], key=lambda e: e["ts"])
        assert [(e["action"], e["account"]) for e in entries] == [
            ("admin_kick", "alice"),
            ("ban", "alice"),
            ("unban", "alice"),
            ("unban", "alice"),  # the second DELETE is audited too, with what it lifted: nothing
        ]
        assert entries[0]["evidence"] == {"by": "ops", "reason": "afk farming"}
        assert entries[1]["evidence"]["by"] == "ops" and entries[1]["evidence"]["ban"]["reason"] == ban["reason"]
        assert [(e["evidence"]["by"], e["evidence"]["lifted"]) for e in entries[2:]] == [("ops", 1), ("ops", 0)]
        assert all(e["campaign"] == CAMP for e in entries)
        status, _, data = await call(http, server, "GET", "/admin/audit?account=bob")
        assert data["audit"] == []
        status, _, data = await call(http, server, "GET", "/admin/audit?limit=1")
        assert len(data["audit"]) == 1

        # bob never noticed any of it
        assert bob.is_open and not bob.errors
        await alice.close()
        await bob.close()


async def test_operator_bans_and_lifts_an_address_range() -> None:
    async with admin_server() as server, aiohttp.ClientSession() as http:
        carol = await join(server, "carol")
        status, _, data = await call(http, server, "POST", "/admin/bans", {"ip_range": "127.0.0.1", "reason": "farm"})
        assert status == 201, data
        code, _ = await carol.wait_closed()
        assert code == CloseCode.BANNED
        # every new connection from the range is refused before its hello: err 21, close 4007
        got: list[bytes] = []
        conn = await ws_connect(url(server), got.append)
        code, _ = await asyncio.wait_for(conn.closed, 5)
        assert code == CloseCode.BANNED and got, got
        assert msgpack.unpackb(got[0]) == {"t": "err", "code": ErrorCode.BANNED, "msg": "banned permanently"}
        assert msgpack.unpackb(got[1])["t"] == "bye"

        status, _, data = await call(http, server, "GET", "/admin/bans")
        assert [b["ip_range"] for b in data["bans"]] == ["127.0.0.1/32"]
        # lifted with the address as the operator typed it (not the canonical /32)
        status, _, data = await call(http, server, "DELETE", "/admin/bans?ip_range=127.0.0.1")
        assert (status, data) == (200, {"lifted": 1})
        carol = await join(server, "carol")
        await carol.next_snapshot()
        # a range with host bits set is a typo the store refuses: 400, and nothing is enforced
        status, _, data = await call(http, server, "POST", "/admin/bans", {"ip_range": "127.0.0.1/8", "reason": "x"})
        assert (status, data["error"]) == (400, "bad_request"), data
        assert carol.is_open and len(server.fairplay.referee.bans) == 0
        await carol.close()


async def test_a_ban_lifted_right_after_it_was_made_stays_lifted() -> None:
    """The ban is written off the request (a task); an unban that arrives before that write must not
    be overtaken by it (the ban would come back in memory and in the store)."""
    async with admin_server() as server, aiohttp.ClientSession() as http:
        for _ in range(3):
            posted = call(http, server, "POST", "/admin/bans", {"account": "erin", "reason": "oops"})
            status, _, _ = await posted
            assert status == 201
            status, _, data = await call(http, server, "DELETE", "/admin/bans/erin")
            assert (status, data) == (200, {"lifted": 1})
        referee = server.fairplay.referee
        await asyncio.gather(*list(referee._tasks))  # nothing still to be written
        assert await referee.store.list_bans(time.time()) == []
        assert referee.bans.find(time.time(), account="erin") is None
        erin = await join(server, "erin")
        await erin.close()
        # and directly on the referee, with no round trip between the two
        referee.ban("frank", None, "oops", None, "ops")
        assert await referee.unban("frank", None, "ops") == 1
        await asyncio.gather(*list(referee._tasks))
        assert await referee.store.list_bans(time.time()) == []
        assert referee.bans.find(time.time(), account="frank") is None
