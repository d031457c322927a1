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
        loop = asyncio.get_running_loop()
        t0, tick0 = loop.time(), server.campaign.tick_count
        counts0 = [c.snapshots for c in honest]
        await wait_for(lambda: server.stats.slow_disconnects >= len(slow), timeout=20)
        await asyncio.sleep(1.0)  # a further second of play after the drops, measured below
        elapsed = loop.time() - t0
        # Every honest client kept receiving at (nearly) the full send rate.
        for c, n0 in zip(honest, counts0, strict=True):
            assert (c.snapshots - n0) / elapsed >= 0.8 * 20, (c.snapshots - n0, elapsed)
        # The tick kept its rate.
        assert (server.campaign.tick_count - tick0) / elapsed >= 0.9 * 60
        assert server.stats.snapshots_skipped >= len(slow)
        assert len(server.campaign.players) == len(honest)
        for c in honest:
            await c.close()
