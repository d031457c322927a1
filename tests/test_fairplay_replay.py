"""The evidence behind a decision replays: `arbiter replay --violations` shows what the live tick flagged."""

from __future__ import annotations

from pathlib import Path

from engine.journal import Journal
from engine.recovery import open_campaign
from engine.tools.replay import run_replay
from sim.games.startales.constants import ACTION_CLAIM, ACTION_GIFT, scan_arg
from sim.violations import V_FORGED_CLAIM, V_THRUST, V_TXN_REPLAY


def test_replay_reproduces_the_live_violations_in_the_audited_tick_range(tmp_path: Path) -> None:
    campaign, store, _ = open_campaign(tmp_path, "c", "startales", 5, {})
    journal = Journal(campaign, store, snapshot_every=120, hash_every=30)
    cheat, _ = campaign.join("cheat")
    honest, _ = campaign.join("honest")
    live: list[tuple[int, int, int]] = []
    for t in range(1, 400):
        campaign.submit(honest, t, t, (0.2, 0.1))
        if t % 50 == 0:
            campaign.submit(cheat, t, t, (1.0, 1.0))  # thrust beyond range
        elif t % 70 == 0:
            campaign.submit(cheat, t, t, (0.0, 0.0, ACTION_CLAIM, 3))  # forged claim
        elif t % 90 == 0:  # a transfer id that was never used is fine; reusing 0 is illegal
            campaign.submit(cheat, t, t, (0.0, 0.0, ACTION_GIFT, scan_arg(honest), 0, 0, 0))
        result = campaign.tick()
        live += [(result.tick, k, e) for k, e, _, _ in result.violations]
    assert journal.close()
    assert {k for _, k, _ in live} >= {V_THRUST, V_FORGED_CLAIM}
    rep = run_replay(str(tmp_path / "c"), verify=True, violations=True)
    assert rep["ok"]
    assert [(v["tick"], v["kind"], v["eid"]) for v in rep["violations"]] == live
    assert all(v["account"] == "cheat" for v in rep["violations"])
    # The audited range alone (from the newest snapshot before it) shows the same rows.
    lo, hi = live[2][0], live[4][0]
    part = run_replay(str(tmp_path / "c"), from_tick=lo, to_tick=hi, violations=True)
    assert [(v["tick"], v["kind"]) for v in part["violations"]] == [(t, k) for t, k, _ in live[2:5]]
    assert V_TXN_REPLAY not in {k for _, k, _ in live}  # bad arguments are V_BAD_ACTION, not replays
