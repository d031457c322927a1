"""The replay viewer in real Chromium: `arbiter replay DIR --serve`'s /watch?replay=ID steps
through the ticks of a recorded campaign, from the headless replay, and plays at a chosen speed."""

from __future__ import annotations

import http.client
from pathlib import Path

import msgpack
from playwright.sync_api import Browser

from engine.tools.replay_serve import ReplayServer, start_replay_server
from netcode.client import ArbiterClient
from tests.browserutil import LoopThread, new_page, thread_server


def record(tmp_path: Path) -> tuple[str, int]:
    """A short wander campaign in which one player moves right; returns (data dir, player id)."""
    with thread_server(game="wander", game_config={"npcs": 30}, data_dir=str(tmp_path)) as srv:

        async def play() -> int:
            c = await ArbiterClient.connect(f"ws://127.0.0.1:{srv.port}/", "rex")
            for _ in range(12):
                c.send_input(1.0, 0.0)
                await c.next_snapshot()
            await c.close()
            return c.player

        eid = srv.run(play())
    return str(tmp_path), eid


def test_the_replay_viewer_steps_through_ticks(browser: Browser, tmp_path: Path) -> None:
    data, eid = record(tmp_path)
    lt = LoopThread()
    rs: ReplayServer = lt.run(start_replay_server(data))
    try:
        page = new_page(browser)
        page.goto(rs.url + "&step=2")
        page.wait_for_function("window.arbiter.drawnTick === window.arbiter.first && window.arbiter.count > 10")
        first, step = page.evaluate("() => [window.arbiter.first, window.arbiter.step]")
        assert step == 2
        xs = []
        for k in range(1, 4):
            page.click("#next")
            page.wait_for_function(f"window.arbiter.drawnTick === {first + k * step}")
            assert page.inner_text("#tick").startswith(f"tick {first + k * step} ")
            xs.append(page.evaluate(f"() => {{ const f = window.arbiter.frames.get({k}); "
                                    f"return f.fields.x[Array.from(f.ids).indexOf({eid})]; }}"))
        page.click("#prev")
        page.wait_for_function(f"window.arbiter.drawnTick === {first + 2 * step}")
        # The player ship moves right in the recording: its x grows frame by frame (when present).
        present = [x for x in xs if x is not None]
        assert present == sorted(present)
        page.select_option("#speed", "16")
        page.click("#play")
        a = "window.arbiter"
        page.wait_for_function(f"{a}.drawnTick === {a}.first + ({a}.count - 1) * {a}.step")
        assert not page.evaluate("() => window.arbiter.playing")  # stops at the end
        page.context.close()
    finally:
        rs.close()
        lt.close()


def test_replay_routes_refuse_bad_parameters(tmp_path: Path) -> None:
    data, _ = record(tmp_path)
    lt = LoopThread()
    rs: ReplayServer = lt.run(start_replay_server(data))
    port = rs.server.sockets[0].getsockname()[1]
    cid = rs.cursor.campaign_id

    def get(target: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", target)
        r = conn.getresponse()
        return r.status, r.read()

    try:
        status, body = get(f"/replay/{cid}/meta")
        meta = msgpack.unpackb(body)
        assert status == 200 and meta["game"] == "wander" and meta["last"] > 0
        status, body = get(f"/replay/{cid}/frames?from=0&n=5&step=3")
        frames = msgpack.unpackb(body)["frames"]
        assert status == 200 and [f["k"] for f in frames] == [0, 3, 6, 9, 12]
        for bad in ("from=-1", "n=0", "n=100000", "step=0", "from=x", "step=9999"):
            assert get(f"/replay/{cid}/frames?{bad}")[0] == 400, bad
        assert get("/replay/other/meta")[0] == 404
        assert get(f"/replay/{cid}/../meta")[0] == 400
    finally:
        rs.close()
        lt.close()
