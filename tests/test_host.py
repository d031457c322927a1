"""`arbiter host`: routing by path and by join-token audience, start/stop/hibernate/wake through the
admin API, hibernation keeping the world and the players' ships."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.host import CampaignSpec, HostConfig
from netcode.client import ArbiterClient, ServerError
from netcode.protocol import BYE_RELOCATE, CloseCode, ErrorCode
from sim import registry
from sim.games.wander import Wander
from sim.spec import Hibernation
from tests.hostutil import curl, running_host, wander, ws
from tests.pgutil import dsn, fresh_database
from tests.serverutil import wait_for
from tests.tokens import RING, Tokens


def _get(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


async def http(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(_get, url, token, method, body)


async def test_routing_by_path_and_by_token_audience(tokens: Tokens) -> None:
    async with running_host([wander("a"), wander("b", npcs=3)], ring=RING) as h:
        by_path = await ArbiterClient.connect(ws(h, "a"), "ada", tokens.issue("ada", "a"))
        by_token = await ArbiterClient.connect(ws(h), "bob", tokens.issue("bob", "b"))
        sa, sb = h.server("a"), h.server("b")
        assert sa is not None and sb is not None
        assert {c.account for c in sa.by_eid.values()} == {"ada"}
        assert {c.account for c in sb.by_eid.values()} == {"bob"}
        assert by_token.welcome is not None and by_token.welcome.world["npcs"] == 3
        # A token of another campaign on a campaign's path: that campaign's verifier refuses it.
        with pytest.raises(ServerError) as wrong:
            await ArbiterClient.connect(ws(h, "a"), "cyd", tokens.issue("cyd", "b"))
        assert wrong.value.code == 15  # TOKEN_WRONG_CAMPAIGN
        # On "/" without a token naming a campaign, or naming one the host does not run: refused.
        for token in ("", tokens.issue("dee", "nowhere")):
            with pytest.raises(ServerError) as unknown:
                await ArbiterClient.connect(ws(h), "dee", token)
            assert unknown.value.code == ErrorCode.UNKNOWN_CAMPAIGN
        # A forged token naming a real campaign is routed there and refused by its verifier.
        with pytest.raises(ServerError) as forged:
            await ArbiterClient.connect(ws(h), "eve", tokens.forged("eve", "b"))
        assert forged.value.code == 12  # TOKEN_BAD_SIGNATURE
        # HTTP: per campaign under /c/{id}/, the host's own at the root.
        assert (await http(curl(h, "/c/b/info")))[1]["campaign"] == "b"
        status, cfg = await http(curl(h, "/c/a/web/config.json"))
        assert status == 200 and cfg["ws"] == "/c/a/" and cfg["campaign"] == "a"
        status, page = await http(curl(h, "/c/a/play"))
        assert status == 200 and b"/web/play.js" in page
        assert (await http(curl(h, "/c/nope/info")))[0] == 404
        status, info = await http(curl(h, "/info"))
        assert info["campaigns"] == ["a", "b"]
        status, stats = await http(curl(h, "/stats"))
        assert stats["campaigns"] == 2 and stats["ccu"] == 2
        assert (await http(curl(h, "/play")))[0] == 404  # which campaign? the message says how
        with pytest.raises((ConnectionError, OSError, RuntimeError, TimeoutError)):
            await ArbiterClient.connect(ws(h, "nope"), "fay", timeout=3)
        await by_path.close()
        await by_token.close()


async def test_start_stop_hibernate_and_wake_through_the_admin_api(tokens: Tokens) -> None:
    admin = tokens.issue("root", "host", role="admin")
    async with running_host(ring=RING, admin_port=0) as h:
        assert h.admin is not None
        base = h.admin.url + "/admin/campaigns"
        assert (await http(base, tokens.issue("root", "host")))[0] == 403  # a player's token
        assert (await http(base, tokens.issue("root", "a", role="admin")))[0] == 401  # a campaign's audience
        status, row = await http(base, admin, "POST", {"campaign": "a", "game": "wander", "seed": 7,
                                                      "config": {"npcs": 4, "max_players": 4}})  # fmt: skip
        assert status == 201 and row["state"] == "running" and row["url"].endswith("/c/a/"), row
        assert (await http(base, admin, "POST", {"campaign": "a", "game": "startales"}))[0] == 409
        assert (await http(base, admin, "POST", {"campaign": "b", "game": "wander",
                                                 "config": {"npcs": -1}}))[0] == 400  # fmt: skip
        c = await ArbiterClient.connect(row["url"], "ada", tokens.issue("ada", "a"))
        # Per-campaign fair-play routes, and the host-wide player list.
        status, players = await http(h.admin.url + "/admin/campaigns/a/players", admin)
        assert [p["account"] for p in players["players"]] == ["ada"]
        status, every = await http(h.admin.url + "/admin/players", admin)
        assert every["players"][0]["campaign"] == "a"
        assert (await http(base + "/a/hibernate", admin, "POST"))[0] == 409  # ada plays
        await c.close()
        await wait_for(lambda: not (s := h.server("a")) or not s.clients)
        status, row = await http(base + "/a/hibernate", admin, "POST")
        assert status == 200 and row["state"] == "hibernated"
        assert h.server("a") is None and h.entries["a"].blob is not None  # in memory: a packed snapshot
        status, row = await http(base + "/a/wake", admin, "POST")
        assert status == 200 and row["state"] == "running"
        c = await ArbiterClient.connect(ws(h, "a"), "ada", tokens.issue("ada", "a"))
        status, _ = await http(base + "/a", admin, "DELETE")
        assert status == 200
        code, _ = await c.wait_closed(10)
        assert code == CloseCode.GOING_AWAY and "a" not in h.entries
        # In memory nothing was sealed for a relocation: the bye says why instead of "relocate".
        assert c.bye is not None and c.bye.reason != BYE_RELOCATE and "operator" in c.bye.reason
        assert (await http(base + "/a", admin, "DELETE"))[0] == 404
        assert (await http(base + "/zzz/wake", admin, "POST"))[0] == 404


async def test_a_hello_wakes_a_hibernated_campaign_with_its_world_and_the_players_ships(
    tmp_path: Path, tokens: Tokens
) -> None:
    async with fresh_database() as db, running_host(
        [CampaignSpec("w", "wander", 3, {"npcs": 6, "max_players": 4})], ring=RING, data_dir=str(tmp_path),
        pg_dsn=dsn(db), host=HostConfig(hibernate_after_s=0.3),
    ) as h:  # fmt: skip
        c = await ArbiterClient.connect(ws(h, "w"), "ada", tokens.issue("ada", "w"))
        for _ in range(30):  # fly right for half a second
            c.send_fields({"dx": 1.0, "dy": 0.0})
            await asyncio.sleep(1 / 60)
        await wait_for(lambda: c.latest is not None and c.latest.ack_seq >= 30)
        server = h.server("w")
        assert server is not None
        await c.close()
        await wait_for(lambda: h.entries["w"].state == "hibernated", timeout=10)
        tick, digest = h.entries["w"].sealed or (0, 0)
        assert tick == server.campaign.tick_count and digest == server.campaign.state_hash()
        assert (await http(curl(h, "/c/w/info")))[1]["state"] == "hibernated"  # asking does not wake it
        assert (Path(tmp_path) / "w" / "campaign.sqlite").is_file()
        # Where PostgreSQL says ada's ship was when she left.
        assert server.progress is not None
        row = await server.progress.pg.load_progress("ada", "w", timeout=5.0)
        assert row is not None and row["last_x"] is not None
        # Her next hello wakes the campaign (recovered from its data dir, checked against the seal).
        c = await ArbiterClient.connect(ws(h), "ada", tokens.issue("ada", "w"))
        assert h.wakes == 1 and h.entries["w"].state == "running"
        woke = h.server("w")
        assert woke is not None and woke is not server and woke.recovery is not None
        assert woke.recovery.snapshot_tick == tick and woke.recovery.replayed_ticks == 0
        await wait_for(lambda: c.latest is not None and c.player in set(c.latest.entities["id"].tolist()))
        me = c.latest.entities[c.latest.entities["id"] == c.player] if c.latest is not None else None
        assert me is not None and abs(float(me["x"][0]) - row["last_x"]) < 2.0  # her ship, where she left it
        assert c.welcome is not None and c.welcome.tick >= tick
        await c.close()


async def test_spectators_wake_and_keep_a_campaign_awake(tokens: Tokens) -> None:
    async with running_host([wander("s")], ring=RING, host=HostConfig(hibernate_after_s=0.2)) as h:
        await wait_for(lambda: h.entries["s"].state == "hibernated", timeout=10)
        watcher = await ArbiterClient.connect(ws(h, "s"), "eye", tokens.issue("eye", "s", role="admin"), watch=True)
        assert h.entries["s"].state == "running" and h.wakes == 1
        await asyncio.sleep(0.6)
        assert h.entries["s"].state == "running"  # a spectator is somebody
        await watcher.close()
        await wait_for(lambda: h.entries["s"].state == "hibernated", timeout=10)
        assert h.hibernations == 2


async def test_a_forged_token_does_not_wake_a_hibernated_campaign(tokens: Tokens) -> None:
    async with running_host([wander("z")], ring=RING) as h:
        assert await h.hibernate("z")
        for url in (ws(h), ws(h, "z")):
            with pytest.raises(ServerError) as forged:
                await ArbiterClient.connect(url, "eve", tokens.forged("eve", "z"))
            assert forged.value.code == 12  # TOKEN_BAD_SIGNATURE, said by the host: nothing woke
        assert h.wakes == 0 and h.entries["z"].state == "hibernated"
        c = await ArbiterClient.connect(ws(h), "ada", tokens.issue("ada", "z"))  # a real one wakes it
        assert h.wakes == 1
        await c.close()


class Drifter(Wander):
    """Wander whose world goes on while nobody is there: it catches up when woken (at most 2 s)."""

    name = "drifter"
    hibernation = Hibernation("advance", max_s=2.0)


async def test_simulated_time_while_hibernated_is_the_games_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._registered, Drifter.name, Drifter)  # known in this test only
    paused, advancing = wander("p"), CampaignSpec("d", "drifter", 1, {"npcs": 8, "max_players": 4})
    async with running_host([paused, advancing]) as h:
        for cid in ("p", "d"):
            assert await h.hibernate(cid)
        await asyncio.sleep(0.5)  # hibernated for a while
        for cid in ("p", "d"):
            await h.ensure_loaded(cid)
        sealed_p, sealed_d = h.entries["p"].sealed, h.entries["d"].sealed
        assert sealed_p is not None and sealed_d is not None
        woke_p, woke_d = h.server("p"), h.server("d")
        assert woke_p is not None and woke_d is not None
        # Paused (the default): the world resumes at the tick it stopped at. Advance: it ran the ticks
        # it missed (about 30 here), never more than its 2 s.
        assert woke_p.offline_ticks == 0 and woke_p.campaign.tick_count >= sealed_p[0]
        assert 20 <= woke_d.offline_ticks <= 2 * 60, woke_d.offline_ticks
        assert woke_d.campaign.tick_count >= sealed_d[0] + woke_d.offline_ticks


async def test_a_wake_that_fails_leaves_the_campaign_able_to_wake_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake that fails after the campaign's data dir was opened must let go of it (its store holds
    the campaign's file lock) and keep what it woke from: the next wake works."""
    import engine.host

    real = engine.host.check_woken
    failures = [RuntimeError("a wake that fails")]

    def failing_once(server: Any, sealed: Any) -> None:
        if failures and sealed is not None:  # a wake, not the start
            raise failures.pop()
        real(server, sealed)

    monkeypatch.setattr(engine.host, "check_woken", failing_once)
    async with running_host([wander("f")], data_dir=str(tmp_path)) as h:
        assert await h.hibernate("f")
        with pytest.raises(RuntimeError, match="a wake that fails"):
            await h.ensure_loaded("f")
        assert h.entries["f"].state == "hibernated"
        await h.ensure_loaded("f")  # the lock is free and the seal still checks
        assert h.entries["f"].state == "running" and h.wakes == 1
