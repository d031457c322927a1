"""Many campaigns in one host: fifty tick on schedule with bots in several and replay to the same
state; one whose step is deliberately expensive is throttled to its share and the others keep
their schedule (counted: throttles and overruns; the rates are bench.density's)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from engine.host import CampaignSpec, Host, HostConfig
from engine.tools.bots import BotConfig, run_bots
from engine.tools.replay import run_replay
from persistence.campaign_reader import format_hash
from sim import registry
from sim.game_api import Game
from sim.spec import Component, Fixed
from tests.hostutil import running_host, wander, ws
from tests.serverutil import wait_for
from tests.tokens import RING, Tokens


def burn(meta: np.ndarray, burn_ms: np.int64) -> None:
    """Costs `burn_ms` of wall time and changes nothing: a deliberately expensive, deterministic step."""
    end = time.perf_counter() + float(burn_ms) / 1000.0
    while time.perf_counter() < end:
        pass


class Slowpoke(Game):
    name = "slowpoke"
    components = (Component("x", "f4", replicate=Fixed(0, 100, 1 / 16)), Component("y", "f4"))
    config = {"burn_ms": (0, 0, 1000)}
    systems = (burn,)
    warm_config = {"burn_ms": 0}


async def test_a_slow_campaign_is_throttled_and_the_others_keep_their_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry._registered, Slowpoke.name, Slowpoke)  # known in this test only
    fast = [wander(f"f{i}", npcs=4, max_players=4) for i in range(6)]
    slow = CampaignSpec("slow", "slowpoke", 1, {"burn_ms": 50, "max_players": 2})  # 3 periods a tick
    async with running_host([*fast, slow], host=HostConfig(share=0.25, hibernate_after_s=0)) as h:
        s = h.server("slow")
        assert s is not None and s.slot is not None
        await wait_for(lambda: s.slot is not None and s.slot.throttled >= 60, timeout=30)
        for f in (h.server(spec.campaign) for spec in fast):
            assert f is not None and f.slot is not None
            assert f.slot.throttled == 0 and f.slot.overruns == 0 and f.stats.ticks > 0, f.cfg.campaign
        # The slow one pays for its own step: every tick of it overran, and it was throttled (the
        # rates themselves are bench.density's).
        assert s.slot.overruns == s.stats.ticks
        status = await asyncio.to_thread(_stats, h)
        assert status["slow"]["throttled_ticks"] == s.slot.throttled and status["f0"]["throttled_ticks"] == 0


def _stats(h: Host) -> dict[str, dict[str, int]]:
    from engine.server_stats import host_stats

    per: dict[str, dict[str, int]] = host_stats(h, full=True)["per_campaign"]
    return per


async def test_fifty_campaigns_tick_with_bots_in_several_and_replays_verify(tmp_path: Path, tokens: Tokens) -> None:
    specs = [wander(f"c{i:02d}", npcs=4, max_players=4, seed=i) for i in range(50)]
    played = [f"c{i:02d}" for i in range(0, 50, 10)]
    async with running_host(specs, ring=RING, data_dir=str(tmp_path), host=HostConfig(hibernate_after_s=0)) as h:
        assert len(h.loaded()) == 50
        reports = await asyncio.gather(*(
            run_bots(BotConfig(url=ws(h, cid), count=2, duration=2.0, token_factory=tokens.factory(),
                               full_decoders=2, name_prefix=f"{cid}-"))
            for cid in played
        ))  # fmt: skip
        for r in reports:
            assert r.connected == 2 and r.connect_failures == 0 and r.moved == 2, r
        for server in h.loaded():
            assert server.slot is not None and server.slot.throttled == 0, server.cfg.campaign
            assert server.stats.ticks > 0 and server.slot.overruns == 0, server.cfg.campaign
        for cid in played:
            joined = h.server(cid)
            assert joined is not None and joined.stats.joins == 2 and joined.stats.inputs_accepted > 0
        live = {s.cfg.campaign: s for s in h.loaded()}
    # Drained: every campaign sealed; its journal replays to the state it stopped in.
    for cid, server in live.items():
        rep = await asyncio.to_thread(run_replay, str(tmp_path / cid), verify=True)
        assert rep["ok"] and rep["hashes_verified"] >= 1, rep
        assert rep["final_state_hash"] == format_hash(server.campaign.state_hash()), cid
        assert rep["to_tick"] == server.campaign.tick_count
        assert rep["players_seen"] == (2 if cid in played else 0)
