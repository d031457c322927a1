"""Bad input on every hub endpoint: oversized bodies, non-JSON, wrong types, unknown fields, huge
strings, unicode tricks, SQL-looking strings, bad path ids and query strings, missing tokens.
Every one gets a 4xx JSON error with a reason, and the database is byte for byte what it was.
The route table is introspected, so an endpoint added without a case here fails the test."""

from __future__ import annotations

import json
from typing import Any

from hub.state import HUB_KEY
from tests.hubutil import Api, hub_env

SQL = "x'); DROP TABLE accounts; --"
FREE_TEXT = {"title", "display_name", "details", "text", "note", "password", "old_password", "new_password"}
TRICKS = ["\u202e\u202e", "\x00\x07", "\u200b\ufeff"]  # bidi override, controls, zero-width only


CLOSED_OBJECTS = {"schedule"}


def _mutations(sample: dict[str, Any]) -> list[tuple[str, Any]]:
    """(what, body) pairs, each with exactly one thing wrong."""
    out: list[tuple[str, Any]] = [("unknown field", {**sample, "zzz": 1})]
    for name, value in sample.items():
        if isinstance(value, bool):
            bad: list[Any] = [1, "true", None]
        elif isinstance(value, int):
            bad = ["1", True, 1.5, 2**70, None]
        elif isinstance(value, float):
            bad = ["1.0", True, None, 10**400, -(10**400)]  # JSON integers beyond any float
        elif isinstance(value, str):
            bad = [12345, ["a"], {"a": 1}, None, "y" * 20_000, *TRICKS]
            if name not in FREE_TEXT:
                bad.append(SQL)
        elif isinstance(value, dict):
            bad = ["x", [1], {"Bad Key!": 1}, {"zzz": {"nested": [1]}}]
            bad += [{**value, k: [v]} for k, v in value.items()]  # e.g. an unhashable where a name goes
            if name in CLOSED_OBJECTS:  # every field of these has a rule: mutate each, as at the top
                bad += [sub for _, sub in _mutations(value)]
        else:
            bad = ["x"]
        out += [(f"{name}={str(b)[:20]!r}", {**sample, name: b}) for b in bad]
    return out


RAW_BODIES: list[tuple[str, bytes]] = [
    ("not json", b"{nope"),
    ("array", b"[1, 2]"),
    ("string", b'"hello"'),
    ("NaN", b'{"a": NaN}'),
    ("duplicate keys", b'{"a": 1, "a": 2}'),
    ("too deep", b'{"a":' * 40 + b"1" + b"}" * 40),
    ("not utf-8", b'{"a": "\xff\xfe"}'),
    ("over 64 KiB", b'{"a": "' + b"x" * (65 * 1024) + b'"}'),
]


async def _fingerprint(pool: Any) -> dict[str, str]:
    tables = [r[0] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    out = {}
    for t in sorted(tables):
        out[t] = await pool.fetchval(
            f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM \"{t}\" x"
        )
    return out


async def test_bad_input_on_every_endpoint(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        ada = await api.register("ada")
        bob = await api.register("bob")
        await hub.accounts.set_role(ada["account"]["account_id"], "admin")
        _, ada = await api.call("POST", "/v1/auth/login", {"login": "ada", "password": "correct horse battery"})
        T, B = ada["access_token"], bob["access_token"]
        bob_id = bob["account"]["account_id"]
        _, camp = await api.call("POST", "/v1/campaigns", {"title": "Base", "game": "startales"}, T)
        cid = camp["campaign_id"]
        _, msg = await api.call("POST", f"/v1/campaigns/{cid}/chat", {"text": "hello"}, T)
        _, rep = await api.call("POST", "/v1/reports", {"account": bob_id, "reason": "spam"}, T)

        # (method, path, sample valid body or None, needs a token)
        cases: list[tuple[str, str, dict[str, Any] | None, bool]] = [
            ("POST", "/v1/auth/register", {"email": "n@example.com", "handle": "newone", "password": "long enough pw",
                                          "display_name": "New"}, False),
            ("POST", "/v1/auth/login", {"login": "ada", "password": "long enough pw"}, False),
            ("POST", "/v1/auth/guest", {"device_id": "device-0123456789abcdef", "display_name": "G"}, False),
            ("POST", "/v1/auth/refresh", {"refresh_token": "rt_" + "A" * 43}, False),
            ("POST", "/v1/auth/logout", {}, True),
            ("POST", "/v1/auth/logout-all", {}, True),
            ("GET", "/v1/me", None, True),
            ("PATCH", "/v1/me", {"display_name": "Ada"}, True),
            ("GET", "/v1/me/sessions", None, True),
            ("POST", "/v1/me/upgrade", {"email": "u@example.com", "handle": "upg", "password": "long enough pw"}, True),
            ("POST", "/v1/me/password", {"old_password": "long enough pw", "new_password": "long enough pw"}, True),
            ("GET", "/v1/players/bob", None, True),
            ("POST", "/v1/campaigns", {"title": "T", "game": "startales", "seed": 1, "config": {"npcs": 1},
                                       "max_players": 4, "visibility": "public",
                                       "schedule": {"kind": "at", "start": 4e9}}, True),
            ("GET", "/v1/campaigns", None, True),
            ("GET", "/v1/campaigns/mine", None, True),
            ("GET", f"/v1/campaigns/{cid}", None, True),
            ("POST", f"/v1/campaigns/{cid}/join", {"invite": "abcdefgh"}, True),
            ("POST", f"/v1/campaigns/{cid}/leave", {}, True),
            ("GET", f"/v1/campaigns/{cid}/members", None, True),
            ("DELETE", f"/v1/campaigns/{cid}/members/{bob_id}", None, True),
            ("POST", f"/v1/campaigns/{cid}/complete", {}, True),
            ("POST", f"/v1/campaigns/{cid}/archive", {}, True),
            ("GET", f"/v1/campaigns/{cid}/replay", None, True),
            ("POST", f"/v1/campaigns/{cid}/chat", {"text": "hi", "client_msg_id": "abc"}, True),
            ("GET", f"/v1/campaigns/{cid}/chat", None, True),
            ("GET", f"/v1/campaigns/{cid}/leaderboard", None, True),
            ("GET", f"/v1/campaigns/{cid}/leaderboard/around-me", None, True),
            ("POST", "/v1/dm/bob", {"text": "hi", "client_msg_id": "abd"}, True),
            ("GET", "/v1/dm/bob", None, True),
            ("GET", "/v1/friends", None, True),
            ("POST", "/v1/friends/requests", {"handle": "bob"}, True),
            ("POST", f"/v1/friends/requests/{bob_id}/accept", {}, True),
            ("POST", f"/v1/friends/requests/{bob_id}/decline", {}, True),
            ("DELETE", f"/v1/friends/{bob_id}", None, True),
            ("GET", "/v1/blocks", None, True),
            ("POST", "/v1/blocks", {"handle": "bob"}, True),
            ("DELETE", f"/v1/blocks/{bob_id}", None, True),
            ("GET", "/v1/leaderboards/global", None, True),
            ("GET", "/v1/leaderboards/global/around-me", None, True),
            ("POST", "/v1/reports", {"handle": "bob", "reason": "spam", "details": "d",
                                     "evidence": {"message_id": msg["id"]}}, True),
            ("GET", "/v1/admin/reports", None, True),
            ("POST", f"/v1/admin/reports/{rep['report_id']}", {"action": "dismiss", "duration_s": 100.0,
                                                              "campaign_only": True, "note": "n"}, True),
            ("GET", "/v1/admin/audit", None, True),
            ("GET", "/v1/admin/servers", None, True),
        ]  # fmt: skip

        # Every route of the app is covered (besides the stream, /health and /metrics).
        app = hub_routes(api, hub)
        covered = {(m, _shape(p, cid, bob_id, rep["report_id"])) for m, p, _, _ in cases}
        assert app - covered == set(), f"routes without bad-input cases: {app - covered}"

        await hub.fairplay.flush(5.0)  # the report's audit row is written behind
        before = await _fingerprint(hub.pool)
        checked = 0

        async def expect_4xx(method: str, path: str, what: str, **kw: Any) -> None:
            nonlocal checked
            status, body = await api.call(method, path, **kw)
            assert 400 <= status < 500, f"{method} {path} [{what}] -> {status} {body}"
            assert isinstance(body, dict) and body.get("error") and body.get("message"), (method, path, what, body)
            checked += 1

        for method, path, sample, authed in cases:
            token = T
            if authed:
                await expect_4xx(method, path, "no token", body=sample)
                await expect_4xx(method, path, "forged token", body=sample, token=T[:-4] + "AAAA")
                await expect_4xx(method, path, "refresh token as access", body=sample, token=bob["refresh_token"])
            sep = "&" if "?" in path else "?"
            await expect_4xx(method, path + sep + "zzz=1", "unknown query parameter", body=sample, token=token)
            if sample is None:
                continue
            for what, raw in RAW_BODIES:
                await expect_4xx(method, path, what, raw=raw, token=token)
            for what, body in _mutations(sample):
                await expect_4xx(method, path, what, body=body, token=token)

        # Bad path ids and query values.
        for bad in ("x'%3B--", "%E2%80%AE", "a" * 300, "c_ZZZ"):
            await expect_4xx("GET", f"/v1/campaigns/{bad}", f"campaign id {bad[:10]}", token=T)
            await expect_4xx("GET", f"/v1/players/{bad}", f"handle {bad[:10]}", token=T)
            await expect_4xx("DELETE", f"/v1/friends/{bad}", f"account {bad[:10]}", token=T)
            await expect_4xx(
                "POST", f"/v1/admin/reports/{bad}", f"report {bad[:10]}", body={"action": "dismiss"}, token=T
            )
        for q in ("limit=0", "limit=abc", "limit=1e3", "limit=101", "status=bogus", "free=maybe", "q=" + "q" * 100,
                  "q=%E2%80%AE", "offset=-1", "game=" + SQL, "limit=1&limit=2"):  # fmt: skip
            await expect_4xx("GET", f"/v1/campaigns?{q}", q, token=T)
        await expect_4xx("GET", "/v1/campaigns/" + cid + "/chat?before=abc", "before", token=T)
        await expect_4xx("PUT", "/v1/me", "method", body={}, token=T)
        await expect_4xx("GET", "/v1/nope", "unknown path", token=T)
        await expect_4xx("POST", "/v1/campaigns", "wrong content type", raw=b"title=x",
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, token=T)  # fmt: skip
        # Cross-account: bob cannot act as ada's campaign owner, read her sessions or her private campaign.
        await expect_4xx("POST", f"/v1/campaigns/{cid}/complete", "not the owner", body={}, token=B)
        await expect_4xx("GET", "/v1/admin/reports", "not an admin", token=B)

        after = await _fingerprint(hub.pool)
        assert after == before, f"bad input changed {[t for t in before if before[t] != after.get(t)]}"
        assert checked > 600

        # Free text is text: an SQL-looking title is stored and read back verbatim, and nothing else happens.
        status, c = await api.call("POST", "/v1/campaigns", {"title": SQL, "game": "startales"}, T)
        assert status == 201 and c["title"] == SQL
        assert await hub.pool.fetchval("SELECT count(*) FROM accounts") == 2


def hub_routes(api: Api, hub: Any) -> set[tuple[str, str]]:
    """(method, canonical path) of every route the hub serves."""
    from hub.app import make_app

    app = make_app(hub)
    assert app[HUB_KEY] is hub
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method in ("HEAD", "OPTIONS") or path in ("/v1/stream", "/health", "/metrics"):
            continue
        out.add((route.method, path))
    return out


def _shape(path: str, cid: str, account: str, rid: int) -> str:
    path = path.replace(cid, "{cid}").replace(account, "{account}")
    path = path.replace(f"/v1/admin/reports/{rid}", "/v1/admin/reports/{rid}")
    path = path.replace("/v1/players/bob", "/v1/players/{handle}").replace("/v1/dm/bob", "/v1/dm/{who}")
    return path


def test_mutations_are_each_wrong_once() -> None:
    muts = _mutations({"a": "x", "n": 1})
    assert all(len(set(b) ^ {"a", "n"}) <= 1 for _, b in muts)
    assert json.dumps(muts[0][1])
