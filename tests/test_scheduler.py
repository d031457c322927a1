"""The host's tick scheduler against an injected clock: staggered phases, per-campaign budgets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from engine.scheduler import Scheduler

RATE = 60.0
PERIOD = 1 / RATE


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Fake:
    clock: Clock
    cost: float = 0.0  # simulated seconds one tick takes
    ticks: int = 0
    sends: int = 0

    def tick(self) -> None:
        self.ticks += 1
        self.clock.t += self.cost

    def sub_send(self) -> None:
        self.sends += 1


def run(sched: Scheduler[Fake], clock: Clock, until: float) -> None:
    while clock.t < until:
        sched.run_due(clock)
        nxt = sched.next_deadline()
        assert nxt is not None
        clock.t = max(clock.t, nxt)


def test_campaigns_are_spread_over_the_phases_of_the_period() -> None:
    clock = Clock()
    sched: Scheduler[Fake] = Scheduler(RATE, 20, 3, phases=8, timer=clock)
    slots = [sched.add(f"c{i}", Fake(clock), clock()) for i in range(20)]
    firsts = sorted({round((s.ticker.next_deadline() - 100.0) / PERIOD * 8) for s in slots})
    assert firsts == list(range(8))  # every phase used, within the first period
    per_phase = [sum(1 for s in slots if s.phase == p) for p in range(8)]
    assert max(per_phase) - min(per_phase) <= 1  # balanced
    run(sched, clock, 101.0)
    for s in slots:  # one second: 60 ticks and 60 sub-sends each (20 Hz × 3 groups), wherever its phase
        assert abs(s.target.ticks - 60) <= 1 and abs(s.target.sends - 60) <= 1


def test_a_campaign_added_later_joins_the_grid() -> None:
    clock = Clock()
    sched: Scheduler[Fake] = Scheduler(RATE, 20, 3, phases=4, timer=clock)
    a = sched.add("a", Fake(clock), clock())
    clock.t += 0.37 * PERIOD + 5 * PERIOD
    b = sched.add("b", Fake(clock), clock())
    offset = (b.ticker.next_deadline() - a.ticker.t0) / PERIOD
    assert b.phase == 1 and abs(offset - round(offset) - 0.25) < 1e-6  # on phase 1's slot of the grid
    assert b.ticker.next_deadline() >= clock()


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_an_expensive_campaign_is_throttled_to_its_share_and_the_others_keep_time(share: float) -> None:
    clock = Clock()
    sched: Scheduler[Fake] = Scheduler(RATE, 20, 3, phases=4, share=share, burst_s=0.05, timer=clock)
    slow = sched.add("slow", Fake(clock, cost=3 * PERIOD), clock())
    fast = [sched.add(f"f{i}", Fake(clock, cost=0.0002), clock()) for i in range(6)]
    run(sched, clock, 110.0)
    # The slow one's ticks take 3 periods each: it gets about `share` of the time, its own ticks overran.
    used = slow.busy_s / 10.0
    assert used <= share * 1.1 + 0.05 / 10 and slow.throttled > 0
    assert slow.overruns == slow.target.ticks
    assert slow.target.ticks + slow.throttled + slow.ticker.dropped_ticks == slow.ticker.ticks
    for s in fast:
        # Late now and then behind the slow one's ticks, but every tick runs: no drop, no throttle.
        assert s.throttled == 0 and s.overruns == 0 and s.ticker.dropped_ticks == 0
        assert s.target.ticks == s.ticker.ticks and s.target.ticks >= 599


def test_without_a_budget_nothing_is_throttled() -> None:
    clock = Clock()
    sched: Scheduler[Fake] = Scheduler(RATE, 20, 3, share=None, timer=clock)
    slot = sched.add("only", Fake(clock, cost=2 * PERIOD), clock())
    run(sched, clock, 101.0)
    assert slot.throttled == 0 and slot.ticker.dropped_ticks > 0  # it can only slow its own world down
