"""docs/web.md's SDK example runs as it is, in Chromium, against a wander server."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser

from tests.browserutil import new_page, thread_server

DOC = Path(__file__).resolve().parent.parent / "docs" / "web.md"


def test_the_sdk_example_runs(browser: Browser) -> None:
    blocks = re.findall(r"```js\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/web.md lost its example"
    with thread_server(game="wander", game_config={"npcs": 20}, aoi_radius=0) as srv:
        page = new_page(browser)
        page.goto(f"{srv.http}/web/config.json")  # a page of the server's origin
        got = page.evaluate(f"async () => {{\n{blocks[0]}\n}}")
        assert got["game"] == "wander" and got["player"] > 0 and got["seq"] == 1
        assert got["entities"] >= 20 and 0 <= got["mine"]["x"] <= 1000
        page.context.close()
