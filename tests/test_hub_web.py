"""The browser's way in through the hub: a game server's /play page (served with --hub-url) logs in
at a hub of another origin (CORS), gets a join token for its campaign and plays — in real Chromium.
Also the CORS answers themselves."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from playwright.sync_api import Browser

from engine.hub_link import HubLink, HubLinkConfig
from engine.security.auth import TokenVerifier
from tests.browserutil import LoopThread, new_page, thread_server
from tests.hubutil import REDIS_URL, RING, hub_config, hub_env, pg_schema, redis_prefix, running_hub
from tests.pgutil import dsn


def _post(url: str, body: dict[str, Any], token: str = "") -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_play_page_logs_in_through_the_hub(browser: Browser, pg_database: str) -> None:
    hub_loop = LoopThread()
    stack: Any = None

    async def start() -> tuple[Any, str]:
        nonlocal stack
        stack = _hub(pg_database)
        return await stack.__anext__()

    try:
        hub, base = hub_loop.run(start())
        _post(
            base + "/v1/auth/register", {"email": "ada@example.com", "handle": "ada", "password": "a long passphrase"}
        )
        ada = _post(base + "/v1/auth/login", {"login": "ada", "password": "a long passphrase"})
        cid = _post(base + "/v1/campaigns", {"title": "Web", "game": "wander"}, ada["access_token"])["campaign_id"]
        with thread_server(TokenVerifier(RING, cid), campaign=cid, game="wander", hub_url=base,
                           game_config={"npcs": 20}) as srv:  # fmt: skip
            link = HubLink(srv.server, HubLinkConfig(REDIS_URL, hub.cfg.redis_prefix, "", "srv-web", 0.2, 2.0))
            srv.run(link.start())
            try:
                page = new_page(browser)
                page.goto(f"{srv.http}/play")
                page.fill("#user", "ada")
                page.fill("#password", "a long passphrase")
                page.click("#join")
                page.wait_for_function("window.arbiter?.client?.snapshots >= 3", timeout=15000)
                account = srv.call(lambda: sorted(c.account for c in srv.server.by_eid.values()))
                assert account == [ada["account"]["account_id"]], "the page plays as the hub's account"
                # A wrong password is refused with the hub's message, shown on the page.
                page2 = new_page(browser)
                page2.goto(f"{srv.http}/play")
                page2.fill("#user", "ada")
                page2.fill("#password", "not the password")
                page2.click("#join")
                page2.wait_for_function("document.getElementById('login-status').textContent.includes('invalid')")
            finally:
                srv.run(link.close())
    finally:
        if stack is not None:
            hub_loop.run(stack.aclose())
        hub_loop.close()


async def _hub(pg_database: str) -> AsyncIterator[tuple[Any, str]]:
    async with redis_prefix() as prefix, pg_schema(pg_database) as schema:
        cfg = hub_config(dsn(pg_database), REDIS_URL, prefix, pg_schema=schema)
        async with running_hub(cfg) as (hub, base):
            yield hub, base


async def test_cors_preflight_and_headers(pg_database: str) -> None:
    async with hub_env(pg_database) as (_, api):
        origin = {"Origin": "http://game.example:8765"}
        async with api.session.options(api.base + "/v1/auth/login", headers={
            **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
        }) as r:  # fmt: skip
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            assert "Access-Control-Allow-Credentials" not in r.headers
        async with api.session.get(api.base + "/v1/me", headers=origin) as r:
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "*"
    async with hub_env(pg_database, cors_origins=("https://play.example",)) as (_, api):
        async with api.session.get(api.base + "/health", headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with api.session.get(api.base + "/health", headers={"Origin": "https://play.example"}) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "https://play.example"
