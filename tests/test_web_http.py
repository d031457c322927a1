"""The web routes on the game port and the replay viewer's: content types, caching, and a clear 4xx
for bad input (path traversal, bad escapes, huge paths and query strings, unknown files)."""

from __future__ import annotations

import asyncio
import http.client

from engine.server import GameServer
from engine.web_routes import MAX_QUERY
from tests.serverutil import running_server


def _get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    # http.client sends the target as is: no normalisation of "..", unlike a browser or urllib.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", target)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


async def get(server: GameServer, target: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_get, server.port, target)


async def test_pages_and_files_have_their_types_and_caching() -> None:
    async with running_server(game="wander", game_config={"npcs": 10}) as srv:
        status, h, body = await get(srv, "/play")
        assert status == 200 and h["content-type"].startswith("text/html") and b"/web/play.js" in body
        assert h["cache-control"] == "no-cache" and "script-src 'self'" in h["content-security-policy"]
        status, h, body = await get(srv, "/watch?replay=x")
        assert status == 200 and b"/web/watch.js" in body
        status, h, body = await get(srv, "/web/sdk/client.js")
        assert status == 200 and h["content-type"].startswith("text/javascript")  # module scripts need it
        assert "max-age" in h["cache-control"] and h["x-content-type-options"] == "nosniff"
        status, h, _ = await get(srv, "/web/style.css")
        assert status == 200 and h["content-type"].startswith("text/css")
        status, h, body = await get(srv, "/web/config.json")
        assert status == 200 and h["cache-control"] == "no-store"
        assert b'"game": "wander"' in body and b'"tokens": false' in body
        # the engine's own routes are untouched
        assert (await get(srv, "/health"))[0] == 200


BAD = [
    ("/web/../engine/server.py", 400),
    ("/web/sdk/../../pyproject.toml", 400),
    ("/web/%2e%2e/pyproject.toml", 400),
    ("/web/%2E%2E%2Fpyproject.toml", 400),
    ("/web/..%5cpyproject.toml", 400),
    ("/web/sdk%00.js", 400),
    ("/web/%ff.js", 400),
    ("/web/.hidden.js", 400),
    ("/web/sdk/client.js;rm", 400),
    ("/web/nope.js", 404),
    ("/web/sdk/", 404),
    ("/nothing-here", 404),
    ("/web/" + "a" * 600 + ".js", 414),
    ("/play?" + "q=" + "x" * MAX_QUERY, 414),
]


async def test_bad_paths_get_a_clear_4xx() -> None:
    async with running_server(game="wander", game_config={"npcs": 10}) as srv:
        for target, status in BAD:
            got, h, body = await get(srv, target)
            assert got == status, (target, got, body[:200])
            assert h["content-type"].startswith("text/plain") and body.strip()  # says why, in words
        assert (await get(srv, "/health"))[0] == 200  # and the server goes on


async def test_a_request_line_beyond_the_http_limit_is_refused() -> None:
    async with running_server(game="wander", game_config={"npcs": 10}) as srv:
        got, _, _ = await get(srv, "/play?" + "x" * 9000)
        assert 400 <= got < 500
        assert (await get(srv, "/health"))[0] == 200
