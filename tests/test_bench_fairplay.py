"""bench.fairplay's models hold in small: honest players under jitter, stalls and loss raise nothing,
and every cheat class is caught and neutralized (the bench itself runs 10,000 bot-minutes)."""

from __future__ import annotations

from bench.fairplay import SIM_CHEATS, bench_honest, detect_protocol, detect_sim


def test_honest_fleet_under_a_bad_network_raises_nothing() -> None:
    out = bench_honest(bots=100, minutes=1.0, seed=2)
    assert out["false_positives"] == 0, out["false_positive_kinds"]
    assert out["policy_decisions"] == 0
    # ...while really playing through a really bad network.
    assert out["builds"] > 0 and out["gifts"] > 0 and out["claims"] > 0 and out["stalls"] > 100


def test_every_cheat_class_is_detected_neutralized_and_kicked() -> None:
    rows = [detect_sim(name, seconds=15.0) for name in SIM_CHEATS] + detect_protocol()
    for r in rows:
        assert r["detected"] and r["neutralized"] and r["time_to_kick_s"] is not None, r
    assert all(r.get("honest_violations", 0) == 0 for r in rows)
