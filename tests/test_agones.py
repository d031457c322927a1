"""The Agones SDK client (REST) against AgonesTestServer, a test server written from Agones' REST
reference: Agones' real sdk-server needs Kubernetes and cannot run here."""

from __future__ import annotations

import asyncio

import pytest

from engine.agones import CAMPAIGNS_LIST, AgonesLink, AgonesSDK
from netcode.client import ArbiterClient
from tests.agones_test_server import SDK_PREFIX, AgonesTestServer
from tests.serverutil import running_server, url, wait_for


async def test_sdk_calls_match_the_rest_reference() -> None:
    fake = await AgonesTestServer(lists={"campaigns": 10}).start()
    sdk = AgonesSDK(fake.port, host="127.0.0.1")
    try:
        await sdk.set_list_capacity("campaigns", 3)
        assert await sdk.add_list_value("campaigns", "c1")
        assert not await sdk.add_list_value("campaigns", "c1")  # ALREADY_EXISTS is not an error here
        assert await sdk.get_list("campaigns") == {"name": "campaigns", "capacity": "3", "values": ["c1"]}
        assert await sdk.remove_list_value("campaigns", "c1")
        assert not await sdk.remove_list_value("campaigns", "c1")
        await sdk.set_label("game", "wander")
        await sdk.ready()
        gs = await sdk.gameserver()
        assert gs["status"]["state"] == "Ready" and gs["object_meta"]["labels"][SDK_PREFIX + "game"] == "wander"
        bodies = {(m, p): b for _, m, p, b in fake.calls}
        assert bodies[("PATCH", "/v1beta1/lists/campaigns")] == {"capacity": "3"}
        assert bodies[("POST", "/v1beta1/lists/campaigns:addValue")] == {"value": "c1"}
        assert bodies[("PUT", "/metadata/label")] == {"key": "game", "value": "wander"}
        assert bodies[("POST", "/ready")] == {}
    finally:
        await sdk.close()
        await fake.close()


async def test_served_campaign_under_agones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ready after boot, the campaigns List, labels, Health while ticking, drain on Shutdown."""
    fake = await AgonesTestServer(lists={CAMPAIGNS_LIST: 1}).start()
    monkeypatch.setenv("AGONES_SDK_HTTP_PORT", str(fake.port))
    try:
        async with running_server(game="wander", game_config={"npcs": 5}, campaign="ag1") as server:
            assert fake.state == "Ready"
            assert fake.lists[CAMPAIGNS_LIST]["values"] == ["ag1"] and fake.lists[CAMPAIGNS_LIST]["capacity"] == 1
            assert fake.labels[SDK_PREFIX + "game"] == "wander"
            assert fake.annotations[SDK_PREFIX + "game-port"] == str(server.port)
            paths = fake.paths()
            assert paths.index("/ready") > paths.index("/v1beta1/lists/campaigns:addValue")  # ready comes last
            c = await ArbiterClient.connect(url(server), "ada")
            await wait_for(lambda: len(fake.health_at) >= 1, timeout=6)  # every 2 s while the tick runs
            # Agones moves the GameServer to Shutdown (e.g. a Fleet rolling update): the server drains.
            fake.set_state("Shutdown")
            code, _ = await c.wait_closed(10)
            assert code == 1001
            await wait_for(lambda: "/shutdown" in fake.paths(), timeout=10)
            assert fake.lists[CAMPAIGNS_LIST]["values"] == []
    finally:
        await fake.close()


async def test_health_follows_the_tick_loop() -> None:
    fake = await AgonesTestServer(lists={CAMPAIGNS_LIST: 4}).start()
    ticks = [0]
    link = AgonesLink(AgonesSDK(fake.port, host="127.0.0.1"), liveness=lambda: ticks[0], on_shutdown=lambda: None,
                      capacity=4, health_every_s=0.05)  # fmt: skip
    try:
        await link.start(["a", "b"])
        assert fake.lists[CAMPAIGNS_LIST]["values"] == ["a", "b"]
        await asyncio.sleep(0.3)  # a stuck loop: no beats
        assert not fake.health_at and link.missed_beats >= 3
        for _ in range(10):
            ticks[0] += 1
            await asyncio.sleep(0.05)
        assert len(fake.health_at) >= 3
        await link.campaign_stopped("a")
        assert fake.lists[CAMPAIGNS_LIST]["values"] == ["b"]
    finally:
        await link.stop()
        await fake.close()
    assert fake.state == "Shutdown" and fake.lists[CAMPAIGNS_LIST]["values"] == []
