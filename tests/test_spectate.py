"""Spectators (hello "watch": 1): who may watch, what they get, and that they never play."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from engine.security.auth import KeyRing, TokenIssuer, TokenVerifier
from engine.spectate import MAX_SPECTATORS
from netcode.client import ArbiterClient, ServerError
from netcode.ws_client import ws_connect
from tests.serverutil import running_server, url, wait_for


async def test_without_tokens_watching_needs_watch_public() -> None:
    async with running_server(game="wander", game_config={"npcs": 20}) as srv:
        with pytest.raises(ServerError) as e:
            await ArbiterClient.connect(url(srv), "eve", watch=True)
        assert e.value.code == 18  # FORBIDDEN
    async with running_server(game="wander", game_config={"npcs": 20}, watch_public=True) as srv:
        w = await ArbiterClient.connect(url(srv), "eve", watch=True)
        p = await ArbiterClient.connect(url(srv), "pia")
        assert w.player == 0 and p.player > 0
        await wait_for(lambda: w.latest is not None and p.player in w.latest.entities["id"].tolist())
        assert w.latest is not None and len(w.latest.entities) == 21  # the whole world, whatever the AOI
        await wait_for(lambda: w.info is not None and [p.player, "pia"] in w.info["players"], timeout=5)
        # A spectator's inputs carry its acks and nothing else: no ship moves, nothing is refused.
        before = srv.stats.as_dict()
        for _ in range(20):
            w.send_input(1.0, 1.0)
            await asyncio.sleep(0.01)
        await w.next_snapshot()
        after = srv.stats.as_dict()
        assert after["inputs_accepted"] == before["inputs_accepted"]
        assert after["inputs_refused"] == before["inputs_refused"] and len(srv.by_eid) == 1
        assert w.session.decoder is not None and w.session.decoder.dropped == 0
        for c in (w, p):
            await c.close()


async def test_admin_tokens_watch_others_are_refused_and_spectators_are_bounded() -> None:
    ring = KeyRing.generate()
    issuer = TokenIssuer(ring)
    async with running_server(TokenVerifier(ring, "default"), game="wander", game_config={"npcs": 5}) as srv:
        for token, code in (("", 10), ("garbage", 11), (issuer.issue("pat", "default"), 18),
                            (issuer.issue("root", "other", role="admin"), 15)):  # fmt: skip
            with pytest.raises(ServerError) as e:
                await ArbiterClient.connect(url(srv), "x", token, watch=True)
            assert e.value.code == code
        admin = issuer.issue("root", "default", role="admin")
        # The same admin token may be presented again (a page reload, a reconnect)...
        watchers = [await ArbiterClient.connect(url(srv), "w", admin, watch=True) for _ in range(MAX_SPECTATORS)]
        # ...but the spectator slots are bounded.
        with pytest.raises(ServerError) as e:
            await ArbiterClient.connect(url(srv), "w", admin, watch=True)
        assert e.value.code == 7  # SERVER_FULL
        await watchers[0].close()
        await wait_for(lambda: sum(c.spectator for c in srv.clients.values()) < MAX_SPECTATORS)
        again = await ArbiterClient.connect(url(srv), "w", admin, watch=True)  # its slot came back
        assert again.player == 0
        for c in [*watchers[1:], again]:
            await c.close()


async def test_a_bool_watch_flag_is_a_bad_field() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}, watch_public=True) as srv:
        c = await ArbiterClient.connect(url(srv), "ok")  # the server still plays


        errors: list[dict[str, object]] = []
        conn = await ws_connect(url(srv), lambda b: errors.append(msgpack.unpackb(b)), lambda code, r: None)
        conn.send(msgpack.packb({"t": "hello", "v": 1, "name": "b", "watch": True}))
        await wait_for(lambda: bool(errors))
        assert errors[0]["t"] == "err" and errors[0]["code"] == 3
        conn.close()
        await c.close()
