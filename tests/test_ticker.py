"""The fixed-step scheduler against an injected clock."""

from engine.ticker import FixedStep


def test_ticks_follow_the_clock_without_drift() -> None:
    fs = FixedStep(60.0, max_catchup=5)
    fs.start(100.0)
    ran = 0
    t = 100.0
    # Wake up a little late every time: deadlines come from the tick count, so lateness never adds up.
    for _ in range(6000):
        ran += fs.due(t)
        t = fs.next_deadline() + 0.0004
    assert ran == 6000
    assert abs(fs.next_deadline() - (100.0 + 6000 / 60.0)) < 1e-9
    assert fs.dropped_ticks == 0 and fs.late_ticks == 0


def test_first_call_runs_tick_zero_and_nothing_early() -> None:
    fs = FixedStep(60.0)
    assert fs.due(5.0) == 1  # tick 0 at t0
    assert fs.due(5.0 + 0.5 / 60) == 0  # half a period later: nothing due
    assert fs.due(5.0 + 1.0 / 60) == 1


def test_catch_up_is_bounded_and_the_rest_is_dropped_and_counted() -> None:
    fs = FixedStep(60.0, max_catchup=3)
    fs.start(0.0)
    assert fs.due(0.0) == 1
    # A 1 s stall: 60 ticks are due; only 3 run, 57 are dropped.
    n = fs.due(1.0)
    assert n == 3
    assert fs.dropped_ticks == 57
    assert fs.late_ticks == 59
    # The schedule continues from the present, not from the backlog.
    assert fs.due(1.0) == 0
    assert fs.due(1.0 + 1 / 60) == 1


def test_short_overrun_catches_up_fully() -> None:
    fs = FixedStep(60.0, max_catchup=5)
    fs.start(0.0)
    fs.due(0.0)
    assert fs.due(3.5 / 60) == 3  # ticks 1, 2, 3
    assert fs.dropped_ticks == 0
    assert fs.next_deadline() == 4 / 60
