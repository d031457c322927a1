"""Accounts and sessions on a real hub (PostgreSQL + Redis): registration, login, guests and their
upgrade, refresh rotation and reuse, logout, password change, profiles, rate limits and Redis loss."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import jwt
import pytest

from engine.security.auth import TokenVerifier
from hub.config import ACCESS_AUDIENCE
from tests.hubutil import REDIS_URL, RING, Api, eventually, hub_config, hub_env, pg_schema, redis_prefix, running_hub
from tests.pgutil import dsn

PW = "correct horse battery"


async def test_register_login_profile_and_tokens(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        reg = await api.register("ada")
        assert reg["account"]["handle"] == "ada" and reg["token_type"] == "Bearer" and reg["expires_in"] == 900
        assert reg["refresh_token"].startswith("rt_")
        # The access token is a 15-minute JWT of the join tokens' key ring, for the hub's audience only.
        claims = TokenVerifier(RING, ACCESS_AUDIENCE).verify(reg["access_token"], consume=False)
        assert claims.account == reg["account"]["account_id"] and claims.exp - claims.iat == 900
        header = jwt.get_unverified_header(reg["access_token"])
        assert header["alg"] == "HS256" and header["kid"] == RING.active_kid
        # A refresh token is stored hashed: its text is nowhere in the database.
        rows = await hub.pool.fetch("SELECT token_hash FROM refresh_tokens")
        assert len(rows) == 1 and reg["refresh_token"].encode() not in bytes(rows[0][0])

        status, me = await api.call("GET", "/v1/me", token=reg["access_token"])
        assert status == 200 and me["email"] == "ada@example.com" and me["history"] == []
        status, body = await api.call("POST", "/v1/auth/login", {"login": "ADA@example.com", "password": PW})
        assert status == 200 and body["account"]["account_id"] == me["account_id"]
        status, body = await api.call("POST", "/v1/auth/login", {"login": "ada", "password": PW})
        assert status == 200
        status, body = await api.call("PATCH", "/v1/me", {"display_name": "Ada L."}, reg["access_token"])
        assert status == 200 and body["display_name"] == "Ada L."
        status, pub = await api.call("GET", "/v1/players/ada", token=body and reg["access_token"])
        assert status == 200 and pub["display_name"] == "Ada L." and "email" not in pub
        # Duplicate email or handle: one message that does not say which.
        for dup in ({"email": "ada@example.com", "handle": "other"}, {"email": "x@example.com", "handle": "ADA"}):
            status, body = await api.call("POST", "/v1/auth/register", {**dup, "password": PW})
            assert status == 409 and body["message"] == "email or handle not available"
        status, _ = await api.call("GET", "/v1/me")
        assert status == 401


async def test_unknown_account_and_wrong_password_look_the_same(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        await api.register("bob")
        wrong = await api.call("POST", "/v1/auth/login", {"login": "bob", "password": "not the password"})
        unknown = await api.call("POST", "/v1/auth/login", {"login": "nobody", "password": "not the password"})
        assert wrong == unknown == (401, {"error": "unauthorized", "message": "invalid login or password"})
        assert hub.metrics.logins.labels("failed")._value.get() == 2


async def test_refresh_rotates_and_reuse_revokes_the_family(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        reg = await api.register("carol")
        first = reg["refresh_token"]
        status, second = await api.call("POST", "/v1/auth/refresh", {"refresh_token": first})
        assert status == 200 and second["refresh_token"] != first
        status, third = await api.call("POST", "/v1/auth/refresh", {"refresh_token": second["refresh_token"]})
        assert status == 200
        access = third["access_token"]
        assert (await api.call("GET", "/v1/me", token=access))[0] == 200
        # A second login is another family: it must survive the theft of the first.
        status, other = await api.call("POST", "/v1/auth/login", {"login": "carol", "password": PW})
        assert status == 200

        # The first token again (stolen and replayed): refused, and the whole family is revoked.
        status, body = await api.call("POST", "/v1/auth/refresh", {"refresh_token": first})
        assert status == 401 and "revoked" in body["message"]
        status, _ = await api.call("POST", "/v1/auth/refresh", {"refresh_token": third["refresh_token"]})
        assert status == 401, "the newest token of a revoked family is dead too"
        assert (await api.call("GET", "/v1/me", token=access))[0] == 401, "and so are its access tokens"
        assert (await api.call("GET", "/v1/me", token=other["access_token"]))[0] == 200
        status, _ = await api.call("POST", "/v1/auth/refresh", {"refresh_token": other["refresh_token"]})
        assert status == 200
        revoked = await hub.pool.fetchval("SELECT count(*) FROM session_families WHERE revoked_at IS NOT NULL")
        assert revoked == 1


async def test_logout_logout_everywhere_and_password_change(pg_database: str) -> None:
    async with hub_env(pg_database) as (_hub, api):
        a = await api.register("dave")
        _, b = await api.call("POST", "/v1/auth/login", {"login": "dave", "password": PW})
        _, c = await api.call("POST", "/v1/auth/login", {"login": "dave", "password": PW})
        ws = await api.stream(b["access_token"])

        assert (await api.call("POST", "/v1/auth/logout", None, a["access_token"]))[0] == 204
        assert (await api.call("GET", "/v1/me", token=a["access_token"]))[0] == 401
        assert (await api.call("POST", "/v1/auth/refresh", {"refresh_token": a["refresh_token"]}))[0] == 401
        assert (await api.call("GET", "/v1/me", token=b["access_token"]))[0] == 200

        # Password change: the old password is checked, every other session ends (its stream too).
        body = {"old_password": "wrong wrong wrong", "new_password": "a new long passphrase"}
        assert (await api.call("POST", "/v1/me/password", body, c["access_token"]))[0] == 403
        body["old_password"] = PW
        assert (await api.call("POST", "/v1/me/password", body, c["access_token"]))[0] == 204
        assert (await api.call("GET", "/v1/me", token=c["access_token"]))[0] == 200
        assert (await api.call("GET", "/v1/me", token=b["access_token"]))[0] == 401
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4003, msg
        assert (await api.call("POST", "/v1/auth/login", {"login": "dave", "password": PW}))[0] == 401
        status, d = await api.call("POST", "/v1/auth/login", {"login": "dave", "password": "a new long passphrase"})
        assert status == 200

        assert (await api.call("POST", "/v1/auth/logout-all", None, d["access_token"]))[0] == 204
        for tok in (c["access_token"], d["access_token"]):
            assert (await api.call("GET", "/v1/me", token=tok))[0] == 401


async def test_a_revocation_reaches_another_hub_process(pg_database: str) -> None:
    """Hub B learns of a logout on hub A (bus, and PostgreSQL when the bus misses it)."""
    async with redis_prefix() as prefix, pg_schema(pg_database) as schema:
        cfg = hub_config(dsn(pg_database), REDIS_URL, prefix, pg_schema=schema)
        async with running_hub(cfg) as (_, base_a), running_hub(cfg) as (_, base_b), Api(base_a) as a, Api(base_b) as b:
            reg = await a.register("erin")
            assert (await b.call("GET", "/v1/me", token=reg["access_token"]))[0] == 200
            await a.call("POST", "/v1/auth/logout", None, reg["access_token"])
            await eventually(lambda: _status(b, "GET", "/v1/me", None, reg["access_token"], want=401), timeout=5)


async def test_guest_then_upgrade_keeps_the_account(pg_database: str) -> None:
    async with hub_env(pg_database) as (hub, api):
        device = {"device_id": "device-0123456789abcdef"}
        status, g = await api.call("POST", "/v1/auth/guest", device)
        assert status == 201 and g["account"]["guest"] and g["account"]["handle"].startswith("guest_")
        status, again = await api.call("POST", "/v1/auth/guest", device)
        assert status == 200 and again["account"]["account_id"] == g["account"]["account_id"]
        stored = await hub.pool.fetchval("SELECT device_hash FROM accounts")
        assert stored and device["device_id"] not in stored

        up = {"email": "gwen@example.com", "handle": "gwen", "password": PW}
        status, me = await api.call("POST", "/v1/me/upgrade", up, g["access_token"])
        assert status == 200 and not me["guest"] and me["account_id"] == g["account"]["account_id"]
        assert (await api.call("POST", "/v1/me/upgrade", up, g["access_token"]))[0] == 409
        status, login = await api.call("POST", "/v1/auth/login", {"login": "gwen", "password": PW})
        assert status == 200 and login["account"]["account_id"] == g["account"]["account_id"]
        # The device id no longer logs in: after the upgrade the password does.
        status, fresh = await api.call("POST", "/v1/auth/guest", device)
        assert status == 201 and fresh["account"]["account_id"] != g["account"]["account_id"]


async def test_login_limit_per_address_triggers_then_expires(pg_database: str) -> None:
    async with hub_env(pg_database, login_failures_per_ip=5, login_window_s=1.5) as (_hub, api):
        await api.register("fay")
        for i in range(5):  # five different names: the per-account backoff stays out of the way
            status, _ = await api.call("POST", "/v1/auth/login", {"login": f"nobody{i}", "password": "wrong password"})
            assert status == 401
        # The limit holds even for the right password, with a Retry-After.
        status, body = await api.call("POST", "/v1/auth/login", {"login": "fay", "password": PW})
        assert status == 429 and body["error"] == "too_many_requests"
        async with api.session.post(api.base + "/v1/auth/login", json={"login": "fay", "password": PW}) as r:
            assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 2
        # ... and lifts when its window ends (1.5 s here; 1 h by default).
        await eventually(lambda: _status(api, "POST", "/v1/auth/login", {"login": "fay", "password": PW}), step=0.1)


async def test_behind_a_proxy_the_client_cannot_pick_its_rate_limit_address(pg_database: str) -> None:
    """With --trust-forwarded the address is the one our proxy appended (the last entry); whatever a
    client writes before it does not give it a fresh login budget."""
    async with hub_env(pg_database, login_failures_per_ip=3, trust_forwarded=True) as (_, api):
        statuses = []
        for i in range(6):
            fwd = {"X-Forwarded-For": f"10.0.0.{i}, 192.0.2.7"}  # a forged first hop, the proxy's entry last
            body = {"login": f"nobody{i}", "password": "wrong password"}
            statuses.append((await api.call("POST", "/v1/auth/login", body, headers=fwd))[0])
        assert statuses == [401, 401, 401, 429, 429, 429], statuses
        other = {"X-Forwarded-For": "192.0.2.8"}  # another client behind the same proxy is not limited
        assert (await api.call("POST", "/v1/auth/login", {"login": "nobody9", "password": "wrong password"},
                               headers=other))[0] == 401  # fmt: skip


async def test_per_account_backoff(pg_database: str) -> None:
    async with hub_env(pg_database, account_free_failures=2, account_backoff_base_s=1.0) as (_, api):
        await api.register("gus")
        for _ in range(3):
            assert (await api.call("POST", "/v1/auth/login", {"login": "gus", "password": "bad password"}))[0] == 401
        status, body = await api.call("POST", "/v1/auth/login", {"login": "gus", "password": PW})
        assert status == 429 and "account" in body["message"]
        await eventually(lambda: _status(api, "POST", "/v1/auth/login", {"login": "gus", "password": PW}), step=0.1)


async def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_limits(pg_database: str) -> None:
    """Guesses sent all at once, before any has failed: each limit counts them as they start, so the
    burst gets no more password checks than sequential guesses would."""
    async with hub_env(pg_database, login_failures_per_ip=5, account_free_failures=2) as (_, api):
        await api.register("hana")

        async def guess(login: str) -> int:
            return (await api.call("POST", "/v1/auth/login", {"login": login, "password": "wrong password"}))[0]

        one_account = await asyncio.gather(*(guess("hana") for _ in range(20)))
        assert set(one_account) <= {401, 429} and 1 <= one_account.count(401) <= 3, one_account
        many_accounts = await asyncio.gather(*(guess(f"nobody{i}") for i in range(20)))
        assert set(many_accounts) <= {401, 429}
        assert one_account.count(401) + many_accounts.count(401) <= 5, (one_account, many_accounts)


async def test_login_fails_closed_when_redis_is_down(pg_database: str) -> None:
    async with redis_prefix() as prefix, pg_schema(pg_database) as schema:
        cfg = hub_config(dsn(pg_database), REDIS_URL, prefix, pg_schema=schema)
        async with running_hub(cfg) as (hub, base), Api(base) as api:
            await api.register("hal")
        dead = hub_config(dsn(pg_database), "redis://127.0.0.1:1/0", prefix, pg_schema=schema)
        async with running_hub(dead) as (hub, base), Api(base) as api:
            status, body = await api.call("POST", "/v1/auth/login", {"login": "hal", "password": PW})
            assert status == 503 and "Redis" in body["message"]
            status, body = await api.call("POST", "/v1/auth/register",
                                          {"email": "i@example.com", "handle": "ivy", "password": PW})  # fmt: skip
            assert status == 503
            assert await hub.pool.fetchval("SELECT count(*) FROM accounts WHERE handle = 'ivy'") == 0


async def test_secrets_never_reach_the_log(pg_database: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with hub_env(pg_database) as (_, api):
        reg = await api.register("jon", password="a secret passphrase")
        _, again = await api.call("POST", "/v1/auth/refresh", {"refresh_token": reg["refresh_token"]})
        await api.call("POST", "/v1/auth/refresh", {"refresh_token": reg["refresh_token"]})  # reuse: logged event
        await api.call("POST", "/v1/auth/login", {"login": "jon", "password": "wrong password"})
    text = caplog.text
    for secret in ("a secret passphrase", "wrong password", reg["access_token"], reg["refresh_token"],
                   again["access_token"], again["refresh_token"]):  # fmt: skip
        assert secret not in text


async def _status(api: Api, method: str, path: str, body: Any, token: str | None = None, want: int = 200) -> bool:
    return (await api.call(method, path, body, token))[0] == want

