"""The hub places campaigns on an `arbiter host`: the host registers its capacity and its campaigns,
answers `start` by starting one (or waking it), and a campaign it hibernated stays located there
(without taking a slot) so its players' hellos wake it. Real hub, real host, PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path

from engine.host import HostConfig
from engine.hub_link import HubLink, HubLinkConfig
from netcode.client import ArbiterClient
from persistence.redis_layout import RedisKeys, open_redis
from persistence.redis_registry import CampaignSpec, Registry, new_request, send_control
from tests.hostutil import running_host
from tests.hubutil import REDIS_URL, RING, Api, eventually, hub_config, redis_prefix, running_hub
from tests.pgutil import dsn, fresh_database
from tests.serverutil import wait_for


async def test_the_hub_places_campaigns_on_a_host_and_wakes_them(tmp_path: Path) -> None:
    async with fresh_database() as db, redis_prefix() as prefix:
        cfg = hub_config(dsn(db), REDIS_URL, prefix, pg_schema="hub")
        async with running_hub(cfg) as (_, base), Api(base) as api, running_host(
            ring=RING, data_dir=str(tmp_path), pg_dsn=dsn(db), host=HostConfig(capacity=10, hibernate_after_s=0.5),
        ) as host:  # fmt: skip
            link = HubLink(host, HubLinkConfig(REDIS_URL, prefix, "", "host-1", 0.2, 2.0))
            await link.start()
            registry = Registry(open_redis(REDIS_URL), RedisKeys(prefix))
            try:
                me = await api.register("ada")
                token = me["access_token"]
                record = await registry.server("host-1")
                assert record is not None and record.kind == "host" and record.accepts and record.capacity == 10
                assert record.data.startswith("pg:") and "wander" in record.games

                # Two campaigns, both placed on the host (it has room): one URL, routed by the tokens.
                seats = []
                for title in ("one", "two"):
                    _, c = await api.call("POST", "/v1/campaigns", {"title": title, "game": "wander",
                                                                    "max_players": 4}, token)  # fmt: skip
                    status, seat = await api.call("POST", f"/v1/campaigns/{c['campaign_id']}/join", None, token)
                    assert status == 200 and seat["server"] == "host-1", seat
                    seats.append((c["campaign_id"], seat))
                (c1, s1), (c2, s2) = seats
                assert s1["url"] == s2["url"] == host.url
                p1 = await ArbiterClient.connect(s1["url"], "ada", s1["token"])
                p2 = await ArbiterClient.connect(s2["url"], "ada", s2["token"])
                for _ in range(10):
                    p1.send_input(1.0, 0.0)
                    await p1.next_snapshot()
                s = host.server(c1)
                assert s is not None and {c.account for c in s.by_eid.values()} == {me["account"]["account_id"]}

                async def both_listed() -> bool:
                    rec = await registry.server("host-1")
                    return rec is not None and set(rec.campaigns) == {c1, c2} and rec.ccu == 2

                await eventually(both_listed)

                # Ada leaves campaign one: it hibernates; it stays this host's, without taking a slot.
                await p1.close()
                await wait_for(lambda: host.entries[c1].state == "hibernated", timeout=10)

                async def hibernated() -> bool:
                    rec = await registry.locate(c1)
                    return rec is not None and rec.campaigns[c1].state == "hibernated" and rec.free == 9

                await eventually(hibernated)
                # Her next join through the hub sends her here; her hello wakes it.
                status, seat = await api.call("POST", f"/v1/campaigns/{c1}/join", None, token)
                assert status == 200 and seat["server"] == "host-1", seat
                assert host.entries[c1].state == "hibernated"
                p1 = await ArbiterClient.connect(seat["url"], "ada", seat["token"])
                assert host.wakes == 1 and host.entries[c1].state == "running"
                assert p1.welcome is not None and p1.welcome.tick > 0
                # A hub's start of a hibernated campaign wakes it too.
                await p2.close()
                await wait_for(lambda: host.entries[c2].state == "hibernated", timeout=10)
                spec = CampaignSpec(c2, "wander", 1, 4)
                blocking = open_redis(REDIS_URL, blocking=5)
                answer = await send_control(registry.redis, blocking, RedisKeys(prefix), "host-1",
                                            new_request("start", c2, 5.0, spec=spec))  # fmt: skip
                await blocking.aclose()
                assert answer == {"ok": True, "url": host.url, "server": "host-1"}
                assert host.wakes == 2 and host.entries[c2].state == "running"
                await p1.close()
            finally:
                await link.close()
                await registry.redis.aclose()
