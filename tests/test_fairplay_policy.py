"""The decision ladder, score decay, observe mode, connection limits and the ban index (pure parts)."""

from __future__ import annotations

import pytest

from engine.security.fairplay.banlist import BanList
from engine.security.fairplay.conn_limit import ConnLimitConfig, ConnLimiter
from engine.security.fairplay.kinds import V_MALFORMED
from engine.security.fairplay.policy import Policy, PolicyConfig, Violation
from engine.security.fairplay.signals import TimingStats
from persistence.fairplay_records import BanRecord
from sim.violations import V_FORGED_CLAIM, V_THRUST


def v(kind: int, tick: int = 1, subject: str = "acct:eve") -> Violation:
    return Violation(kind, subject, tick, 1.0, 0.0)


def test_ladder_warn_kick_kick_ban_then_permanent() -> None:
    p = Policy(PolicyConfig(kick_quiet_s=0.0))
    actions = []
    t = 0.0
    for i in range(40):  # forged claims (20 points each), one per second
        d = p.observe(v(V_FORGED_CLAIM, tick=100 + i), t)
        if d is not None:
            actions.append((d.action, d.ban_s))
        t += 1.0
    assert actions[:4] == [("warn", None), ("kick", None), ("kick", None), ("ban", 3600.0)]
    assert actions.count(("ban", 3600.0)) == 2 and ("ban", None) in actions  # the third ban is permanent


def test_evidence_carries_the_journal_tick_range() -> None:
    p = Policy(PolicyConfig())
    assert p.observe(v(V_THRUST, tick=40), 0.0) is None
    warn = p.observe(v(V_FORGED_CLAIM, tick=50), 0.0)
    kick = p.observe(v(V_FORGED_CLAIM, tick=75), 0.0)
    assert warn is not None and warn.action == "warn" and kick is not None and kick.action == "kick"
    assert kick.tick_range == (40, 75)
    js = kick.to_json()
    assert js["from_tick"] == 40 and js["to_tick"] == 75
    assert [x["name"] for x in js["violations"]] == ["thrust_range", "forged_claim", "forged_claim"]


def test_scores_decay_so_rare_honest_mistakes_never_add_up() -> None:
    p = Policy(PolicyConfig(half_life_s=60.0))
    # One thrust slip (0.25 points) every 5 s for an hour: steady state ~4.3, below warn 10.
    decisions = [p.observe(v(V_THRUST), t * 5.0) for t in range(720)]
    assert all(d is None for d in decisions)
    assert p.score("acct:eve", 3600.0) < 10.0
    assert p.score("acct:eve", 3600.0 + 600) < 0.01


def test_observe_mode_decides_but_does_not_enforce_and_off_does_nothing() -> None:
    p = Policy(PolicyConfig(mode="observe"))
    ds = [p.observe(v(V_FORGED_CLAIM), float(t)) for t in range(3)]
    assert [(d.action, d.enforced) for d in ds if d] == [("warn", True), ("kick", False), ("kick", False)]
    off = Policy(PolicyConfig(mode="off"))
    assert all(off.observe(v(V_FORGED_CLAIM), 0.0) is None for _ in range(10))
    with pytest.raises(ValueError):
        PolicyConfig(mode="lenient")
    with pytest.raises(ValueError):
        PolicyConfig(warn_at=50, kick_at=30)


def test_subject_table_is_bounded() -> None:
    p = Policy(PolicyConfig(max_subjects=100))
    for i in range(1000):
        p.observe(v(V_MALFORMED, subject=f"ip:10.0.{i // 256}.{i % 256}"), float(i))
    assert len(p) <= 100


def test_connection_rate_and_open_cap_per_ip() -> None:
    lim = ConnLimiter(ConnLimitConfig(rate=2.0, burst=3, max_open=5, loopback=True))
    assert [lim.allow("10.0.0.1", 0.0) for _ in range(4)][:3] == [None, None, None]
    assert lim.allow("10.0.0.1", 0.0) is not None  # burst spent
    assert lim.allow("10.0.0.2", 0.0) is None  # other addresses unaffected
    assert lim.allow("10.0.0.1", 1.0) is None  # refilled at 2/s
    exempt = ConnLimiter(ConnLimitConfig(rate=1.0, burst=1))
    assert all(exempt.allow("127.0.0.1", 0.0) is None for _ in range(50))  # loopback exempt by default
    cap = ConnLimiter(ConnLimitConfig(rate=0.0, max_open=2, loopback=True))
    assert cap.allow("::1", 0.0) is None and cap.allow("::1", 0.0) is None
    assert cap.allow("::1", 0.0) is not None
    cap.closed("::1", admitted=False)
    assert cap.allow("::1", 0.0) is None
    # Not yet playing: at most max_unauth per address; one that plays no longer counts.
    pre = ConnLimiter(ConnLimitConfig(rate=0.0, max_unauth=2, loopback=True))
    assert pre.allow("10.0.0.9", 0.0) is None and pre.allow("10.0.0.9", 0.0) is None
    assert pre.allow("10.0.0.9", 0.0) is not None
    pre.admitted("10.0.0.9")
    assert pre.allow("10.0.0.9", 0.0) is None
    pre.closed("10.0.0.9", admitted=True)
    assert pre.allow("10.0.0.9", 0.0) is not None  # still two not playing
    pre.closed("10.0.0.9", admitted=False)
    assert pre.allow("10.0.0.9", 0.0) is None


def test_banlist_by_account_and_range_with_expiry() -> None:
    bans = BanList("c1")
    bans.add(BanRecord(1, "eve", None, "c1", "cheat", "policy", 0.0, until=100.0))
    bans.add(BanRecord(2, None, "10.1.0.0/16", None, "botnet", "ops", 0.0))
    assert bans.find(50.0, account="eve") is not None
    assert bans.find(150.0, account="eve") is None and len(bans) == 1  # expired and dropped
    assert bans.find(150.0, account="bob", ip="10.1.2.3") is not None
    assert bans.find(150.0, account="bob", ip="10.2.2.3") is None
    assert bans.lift(None, "10.1.0.0/16") == 1 and bans.find(150.0, ip="10.1.2.3") is None


def test_timing_signal_flags_only_machine_regular_inputs() -> None:
    import random

    exact = TimingStats(window=100)
    assert [exact.add(i * 0.05) for i in range(101)][-1] is not None
    rng = random.Random(1)
    human = TimingStats(window=100)
    t, out = 0.0, []
    for _ in range(101):
        t += 0.05 + rng.uniform(-0.004, 0.004)  # a few ms of scheduling and network jitter
        out.append(human.add(t))
    assert all(x is None for x in out)
