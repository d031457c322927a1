"""Prometheus /metrics: served on the admin listener, parses, and moves when play happens."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.relocation import ShipConfig
from engine.server import GameServer
from netcode.client import ArbiterClient
from tests.pgutil import dsn, fresh_database
from tests.serverutil import http_get, running_server, url, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(server: GameServer) -> Samples:
    assert server.admin is not None
    base = server.admin.url

    def get() -> str:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            return str(r.read().decode())

    text = await asyncio.to_thread(get)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_parse_and_move_with_play() -> None:
    async with running_server(game="wander", game_config={"npcs": 10}, campaign="m1", admin_port=0) as server:
        before = await _scrape(server)
        c = await ArbiterClient.connect(url(server), "ada")
        for _ in range(10):
            c.send_input(0.5, 0.0)
            await asyncio.sleep(0.02)
        await wait_for(lambda: server.stats.inputs_accepted >= 5)
        await c.next_snapshot()
        after = await _scrape(server)
        cid = {"campaign": "m1"}
        assert _get(after, "arbiter_ticks_total", **cid) > _get(before, "arbiter_ticks_total", **cid)
        count_after = _get(after, "arbiter_tick_duration_seconds_count", **cid)
        assert count_after > _get(before, "arbiter_tick_duration_seconds_count", **cid)
        assert _get(after, "arbiter_tick_duration_seconds_bucket", le="+Inf", **cid) == count_after
        assert _get(after, "arbiter_tick_duration_seconds_sum", **cid) > 0
        assert _get(after, "arbiter_ccu", **cid) == 1 and _get(before, "arbiter_ccu", **cid) == 0
        assert _get(after, "arbiter_inputs_total", result="accepted", reason="", **cid) >= 5
        assert _get(after, "arbiter_bytes_received_total", **cid) > _get(before, "arbiter_bytes_received_total", **cid)
        assert _get(after, "arbiter_bytes_sent_total", **cid) > _get(before, "arbiter_bytes_sent_total", **cid)
        assert _get(after, "arbiter_snapshots_sent_total", **cid) > 0
        assert ("arbiter_tick_overruns_total", (("campaign", "m1"),)) in after
        assert _get(after, "process_resident_memory_bytes") > 0
        assert _get(after, "arbiter_hibernated_campaigns") == 0
        await c.close()
        await wait_for(lambda: not server.clients)
        gone = await _scrape(server)
        # A closed connection's bytes still count.
        assert _get(gone, "arbiter_bytes_received_total", **cid) >= _get(after, "arbiter_bytes_received_total", **cid)
        # Not on the public game port unless asked for.
        status, _ = await http_get(server, "/metrics")
        assert status == 404
        # The rest of the admin API still wants its token.
        try:
            await asyncio.to_thread(urllib.request.urlopen, f"{server.admin.url}/admin/players", None, 5)  # type: ignore[union-attr]
            raise AssertionError("the admin API answered without a token")
        except urllib.error.HTTPError as e:
            assert e.code == 401
    async with running_server(game="wander", game_config={"npcs": 5}, metrics_on_game_port=True) as server:
        status, body = await http_get(server, "/metrics")
        assert status == 200 and b"arbiter_ticks_total" in body


async def test_journal_and_shipping_figures(tmp_path: Path) -> None:
    ship = ShipConfig(interval_s=0.1)
    async with fresh_database() as db, running_server(game="wander", game_config={"npcs": 5}, campaign="m2",
                                                      admin_port=0, data_dir=str(tmp_path), pg_dsn=dsn(db),
                                                      ship=ship) as server:  # fmt: skip
        assert server.shipper is not None
        await wait_for(lambda: server.shipper is not None and server.shipper.shipped_tick > 10, timeout=10)
        m = await _scrape(server)
        assert _get(m, "arbiter_pg_connected", campaign="m2", writer="ship") == 1
        assert _get(m, "arbiter_pg_ship_bytes_total", campaign="m2") > 0
        assert _get(m, "arbiter_pg_ship_fenced", campaign="m2") == 0
        assert ("arbiter_journal_commit_lag_ticks", (("campaign", "m2"),)) in m
        assert ("arbiter_pg_writebehind_queue_depth", (("campaign", "m2"), ("writer", "progress"))) in m
