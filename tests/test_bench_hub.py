"""bench.hub runs end to end in small (two hub processes, a spawned server, streams, the bus)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import hub as bench_hub
from tests.hubutil import redis_prefix
from tests.pgutil import fresh_database


async def _services_up() -> None:
    async with fresh_database(), redis_prefix():
        pass  # skips (or fails under ARBITER_REQUIRE_SERVICES=1) when PostgreSQL or Redis is missing


def test_bench_hub_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_services_up())
    results = tmp_path / "hub.json"
    monkeypatch.setattr(bench_hub, "RESULTS", results)
    assert bench_hub.main(["--quick", "--json"]) == 0
    r = json.loads(results.read_text())
    assert r["login"]["n"] == 20 and r["refresh"]["n"] > 0 and r["join_running"]["n"] > 0
    assert r["join_placement"]["n"] == 1 and r["join_placement"]["p50_ms"] > 0
    f = r["fanout"]
    assert f["received_per_s"] == f["expected_per_s"] > 0, "every chat event reached every member's stream"
    assert min(f["deliveries_per_s_per_hub"]) > 0 and r["posts"]["post_to_delivery"]["n"] == 10
    assert r["presence"]["updates_per_s"] > 0 and min(r["presence"]["deliveries_per_s_per_hub"]) > 0
