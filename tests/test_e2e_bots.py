"""End to end: `arbiter serve` in its own process and 50 bot players over real sockets."""

from __future__ import annotations

import pytest

from engine.tools.bots import BotConfig, run_bots
from engine.tools.launcher import start_server


@pytest.mark.parametrize("game", ["wander", "startales"])
async def test_fifty_bots_get_snapshots_at_the_send_rate_and_move(game: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(["--game", game, "--seed", "7", "--data-dir", str(tmp_path)])
    try:
        report = await run_bots(
            BotConfig(url=server.url, count=50, duration=4.0, full_decoders=50, ping_every=0.5)
        )
        stats = server.stats()
    finally:
        code = server.stop()
    assert report.game == game  # learned from the server (/info), with the game's own brain
    assert report.connected == 50 and report.connect_failures == 0
    # Every bot, not just the average, gets its share of the snapshots: none is starved (the
    # rates themselves are bench.ccu's and bench.timing's).
    assert report.snapshots_per_bot_s_min >= 0.85 * report.snapshots_per_bot_s, report
    assert report.moved == 50, report
    assert report.rtt_samples >= 50  # every bot pings every 0.5 s, and the pongs come back
    # The decoding bots predict their own ship and interpolate everyone else (netcode/prediction.py):
    # on a clean local link the two-send-interval buffer never runs dry for long.
    assert report.predicted_bots == report.interpolated_bots == 50
    assert report.interp_entities_mean > 0 and report.interp_starved_rate < 0.2, report
    assert stats["inputs"] > 0  # (its tick rate under this load: bench.timing, bench.ccu)
    assert code == 0  # SIGTERM is a graceful shutdown
