"""/play and /watch in real Chromium (Debian's, driven by Playwright): the page connects, a key
moves the ship on the server, the canvas shows entities, two pages see each other, a page
survives a server restart, /watch needs an admin token and then shows every player.

One browser for the session (pytest-playwright's `browser`); a game server per test on its own
thread (tests/browserutil.py). Skipped without Chromium, failed instead under
ARBITER_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from engine.security.auth import KeyRing, TokenIssuer, TokenVerifier
from netcode.client import ArbiterClient
from sim.registry import game_names
from tests.browserutil import ThreadServer, new_page, thread_server, wait_until

DOCS = Path(__file__).resolve().parent.parent / "docs"
SMALL = {"wander": {"npcs": 60}, "startales": {"drones": 60, "planets": 12}}


def small(game: str) -> dict[str, Any]:
    return dict(SMALL.get(game, {}))


def js(page: Page, expr: str) -> Any:
    return page.evaluate(f"() => {expr}")


def open_play(page: Page, srv: ThreadServer, name: str, token: str = "") -> int:
    page.goto(f"{srv.http}/play?name={name}&auto=1" + (f"#token={token}" if token else ""))
    page.wait_for_function("window.arbiter?.client?.snapshots >= 3", timeout=15000)
    player = int(js(page, "window.arbiter.client.player"))
    assert player > 0
    return player


def drawn_pixels(page: Page) -> dict[str, int]:
    """Pixels of the canvas that are neither background nor grid: what the renderer drew."""
    return page.evaluate("""() => {
        const c = document.getElementById("view");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let white = 0, colour = 0;
        for (let i = 0; i < d.length; i += 4) {
            const r = d[i], g = d[i + 1], b = d[i + 2];
            if (r > 240 && g > 240 && b > 240) white++;          // the own ship
            else if (r + g + b > 250) colour++;                    // other entities
        }
        return {white, colour};
    }""")


def x_of(srv: ThreadServer, eid: int) -> float:
    x = srv.call(lambda: srv.server.campaign.player_value(eid, "x"))
    assert x is not None
    return float(x)


def test_play_connects_a_key_moves_the_ship_and_the_canvas_draws(browser: Browser) -> None:
    with thread_server(game="wander", game_config=small("wander"), aoi_radius=0) as srv:
        page = new_page(browser)
        eid = open_play(page, srv, "ada")
        assert eid in srv.call(lambda: set(srv.server.by_eid))
        x0 = x_of(srv, eid)
        page.keyboard.down("ArrowRight")
        wait_until(lambda: x_of(srv, eid) > x0 + 1.0)  # read back on the server: the sim moved it
        page.keyboard.up("ArrowRight")
        # the page predicted the same motion
        assert js(page, "window.arbiter.view.own.x") > x0
        page.wait_for_function("window.arbiter.view.visible > 10")
        px = drawn_pixels(page)
        assert px["white"] > 20 and px["colour"] > 60, px  # the ship and the NPC dots, in pixels
        assert "connected" in page.inner_text("#hud-state") and "ms" in page.inner_text("#hud-ping")
        page.context.close()


def test_two_pages_see_each_other(browser: Browser) -> None:
    with thread_server(game="wander", game_config=small("wander"), aoi_radius=0) as srv:
        a, b = new_page(browser), new_page(browser)
        ea, eb = open_play(a, srv, "ann"), open_play(b, srv, "bob")
        for page, other in ((a, eb), (b, ea)):
            page.wait_for_function(f"Array.from(window.arbiter.client.latest.ids).includes({other})", timeout=5000)
            page.wait_for_function(f"window.arbiter.view.interp.sample(1e12).ids.includes({other})", timeout=5000)
        a.context.close()
        b.context.close()


def test_the_page_survives_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    cfg: dict[str, Any] = {"game": "wander", "game_config": small("wander"), "data_dir": str(tmp_path)}
    srv = ThreadServer(**cfg)
    port = srv.port
    try:
        page = new_page(browser)
        open_play(page, srv, "cy")
        srv.stop()
        page.wait_for_function("window.arbiter.closes >= 1 && !window.arbiter.client.connected", timeout=10000)
        srv = ThreadServer(**cfg, port=port)  # the same campaign back on the same address
        page.wait_for_function("window.arbiter.welcomes >= 2 && window.arbiter.client.connected", timeout=20000)
        page.wait_for_function("window.arbiter.client.snapshots >= 6", timeout=10000)
        # A graceful stop lets the ship leave with its player; the page joins again on its own.
        eid = js(page, "window.arbiter.client.player")
        assert eid in srv.call(lambda: set(srv.server.by_eid))
        x0 = x_of(srv, eid)
        page.keyboard.down("ArrowDown")
        page.keyboard.up("ArrowDown")
        page.keyboard.down("ArrowLeft")
        wait_until(lambda: abs(x_of(srv, eid) - x0) > 0.5)  # and its inputs count again
        page.keyboard.up("ArrowLeft")
        page.context.close()
    finally:
        srv.stop()


def test_watch_refuses_without_a_token_and_shows_every_player_with_one(browser: Browser) -> None:
    ring = KeyRing.generate()
    issuer = TokenIssuer(ring)
    with thread_server(TokenVerifier(ring, "default"), game="startales", game_config=small("startales")) as srv:
        url = f"ws://127.0.0.1:{srv.port}/"
        bots = [srv.run(ArbiterClient.connect(url, n, issuer.issue(n, "default", name=n))) for n in ("ivy", "jon")]
        ids = [b.player for b in bots]
        page = new_page(browser)
        page.goto(f"{srv.http}/watch")
        page.wait_for_selector("#login:not(.hidden)")  # the page is ready for a token
        page.click("button[type=submit]")  # no token
        page.wait_for_function("window.arbiter.refused !== null && window.arbiter.refused !== undefined")
        assert js(page, "window.arbiter.refused") == 10  # TOKEN_MISSING
        assert "refused" in page.inner_text("#login-status")
        page.goto(f"{srv.http}/watch?as=player#token={issuer.issue('pat', 'default')}")  # a player's token
        page.wait_for_function("window.arbiter.refused")
        assert js(page, "window.arbiter.refused") == 18  # FORBIDDEN
        page.goto(f"{srv.http}/watch?as=admin#token={issuer.issue('root', 'default', role='admin')}")
        page.wait_for_function("window.arbiter.info && window.arbiter.info.players.length === 2", timeout=10000)
        page.wait_for_function(f"{ids}.every((id) => Array.from(window.arbiter.client.latest?.ids ?? []).includes(id))")
        assert js(page, "window.arbiter.client.player") == 0  # a spectator has no ship
        assert len(srv.call(lambda: srv.server.by_eid)) == 2  # and is not a player
        page.wait_for_function("document.getElementById('players').innerText.includes('jon')", timeout=5000)
        out = "document.getElementById('hud-out').textContent"
        page.wait_for_function(f"!['-', '0.0 KiB/s'].includes({out})", timeout=5000)
        shot = DOCS / "web-watch.png" if os.environ.get("ARBITER_UPDATE_SCREENSHOT") else None
        page.screenshot(path=str(shot or Path(srv.cfg.data_dir or "/tmp") / "arbiter-web-watch.png"))
        for b in bots:
            srv.run(b.close())
        page.context.close()


@pytest.mark.parametrize("game", sorted(game_names()))
def test_play_works_for_every_registered_game(browser: Browser, game: str) -> None:
    with thread_server(game=game, game_config=small(game), aoi_radius=0) as srv:
        page = new_page(browser)
        eid = open_play(page, srv, "gus")
        assert js(page, "window.arbiter.client.welcome.game") == game
        alone = game == "arena"  # arena has no NPCs: a lone player sees its own ship only
        least = -1 if alone else 3
        page.wait_for_function(f"window.arbiter.view.own !== null && window.arbiter.view.visible > {least}")
        assert drawn_pixels(page)["white" if alone else "colour"] > 30
        assert eid == js(page, "window.arbiter.view.own.id")
        page.context.close()


def test_chromium_is_the_system_one() -> None:
    assert shutil.which("chromium") or not os.environ.get("ARBITER_REQUIRE_SERVICES")


def test_a_page_replaced_by_a_newer_one_of_its_account_stays_closed(browser: Browser) -> None:
    """Two tabs of one account: the newer takes the ship over, and the older one takes the server's
    bye as its answer. It must not reconnect and take the ship back, and so on, tab against tab."""
    with thread_server(game="wander", game_config=small("wander"), aoi_radius=0) as srv:
        a, b = new_page(browser), new_page(browser)
        ea = open_play(a, srv, "tess")
        a.wait_for_function("window.arbiter.welcomes === 1")
        eb = open_play(b, srv, "tess")
        assert eb == ea  # the same ship, taken over
        a.wait_for_function("window.arbiter.closes >= 1 && !window.arbiter.client.connected", timeout=10000)
        snaps = int(js(b, "window.arbiter.client.snapshots"))
        b.wait_for_function(f"window.arbiter.client.snapshots >= {snaps + 20}", timeout=10000)  # a second on
        assert js(a, "window.arbiter.welcomes") == 1 and not js(a, "window.arbiter.client.connected")
        assert js(b, "window.arbiter.welcomes") == 1 and js(b, "window.arbiter.client.connected")
        a.context.close()
        b.context.close()
