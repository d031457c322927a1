"""Clients that stop reading neither delay other clients' snapshots nor the tick."""

from __future__ import annotations

import asyncio

from netcode.client import ArbiterClient
from tests.serverutil import running_server, url, wait_for


async def test_stalled_readers_are_skipped_then_dropped() -> None:
    async with running_server(
        game="wander", game_config={"npcs": 1000}, slow_strikes=10, write_limit=32 * 1024, replication="full"
    ) as server:
        honest = [await ArbiterClient.connect(url(server), f"h{i}") for i in range(5)]
        slow = [await ArbiterClient.connect(url(server), f"s{i}", rcvbuf=4096) for i in range(5)]
        for c in slow:
            assert c.conn is not None and c.conn.transport is not None
            c.conn.transport.pause_reading()  # stop reading: the server's backlog to them grows
        groups = server.sender.groups
        sends0, counts0 = server.stats.sends, [c.snapshots for c in honest]
        await wait_for(lambda: server.stats.slow_disconnects >= len(slow), timeout=20)
        sends1 = server.stats.sends
        await wait_for(lambda: server.stats.sends >= sends1 + 20 * groups, timeout=10)  # a second of play after
        # Every honest client got (nearly) every snapshot the server sent it (one per round of the
        # send groups), stalled neighbours or not. The rates themselves: bench.timing.
        await asyncio.sleep(0.1)  # the last frames in flight
        per_client = (server.stats.sends - sends0) / groups
        for c, n0 in zip(honest, counts0, strict=True):
            assert c.snapshots - n0 >= 0.9 * per_client - 2, (c.snapshots - n0, per_client)
        assert server.stats.snapshots_skipped >= len(slow)
        assert len(server.campaign.players) == len(honest)
        for c in honest:
            await c.close()
