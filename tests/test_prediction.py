"""Client prediction + reconciliation against the real game, over a simulated network (no sockets).

Harness timing: iteration T = server phase (deliver inputs due at T, step: produces tick T + 1,
send a snapshot every `send_every` ticks) then client phase (deliver snapshots due at T, maybe send
an input). A message sent in iteration T is delivered in iteration T + latency (+ jitter), unless
lost. An input sent in iteration T therefore first applies in the step producing tick T + L + 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from netcode.prediction import Interpolator, ShipPredictor, TickClock, default_delay_ticks
from sim.registry import make_game
from tests.worlds import Driver

CONFIGS = {
    "startales": {"planets": 4, "drones": 16, "max_players": 4, "width": 1000, "height": 1000},  # thrust
    "wander": {"npcs": 16, "max_players": 4},  # velocity
}


class Link:
    """One direction: fixed latency (+ uniform jitter), Bernoulli loss; may reorder with jitter."""

    def __init__(self, latency: int, loss: float, jitter: int, rng: np.random.Generator) -> None:
        self.latency, self.loss, self.jitter, self.rng = latency, loss, jitter, rng
        self.queue: list[tuple[int, int, object]] = []
        self.n = 0

    def send(self, now: int, msg: object) -> None:
        if self.loss and self.rng.random() < self.loss:
            return
        delay = self.latency + (int(self.rng.integers(0, self.jitter + 1)) if self.jitter else 0)
        self.queue.append((now + delay, self.n, msg))
        self.n += 1

    def deliver(self, now: int) -> list[object]:
        due = sorted(m for m in self.queue if m[0] <= now)
        self.queue = [m for m in self.queue if m[0] > now]
        return [m[2] for m in due]


def assert_converged(sim: Sim, last: int = 20) -> None:
    """The last `last` predictions (made ahead of time) equal the server's state at those ticks."""
    ticks = sorted(t for t in sim.predicted if t in sim.server_pos)[-last:]
    assert len(ticks) == last
    for t in ticks:
        assert sim.predicted[t] == sim.server_pos[t], t


class Sim(Driver):
    """The real game as a server with one predicted client: the predictor gets nothing but the
    welcome's move binding (spec["move"]) and tick rate."""

    def __init__(
        self,
        game_name: str,
        latency: int = 5,
        loss_up: float = 0.0,
        loss_down: float = 0.0,
        jitter: int = 0,
        send_every: int = 3,
        input_every: int = 3,
        seed: int = 7,
        use_clock: bool = False,
    ) -> None:
        super().__init__(game_name, CONFIGS[game_name], seed, inputs=64, events=1024)
        self.eid = self.join()
        self.own_slot = self.slot(self.eid)
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.up = Link(latency, loss_up, jitter, rng)
        self.down = Link(latency, loss_down, jitter, rng)
        self.latency, self.send_every, self.input_every = latency, send_every, input_every
        self.pred = ShipPredictor(self.game.wire_spec()["move"], self.game.tick_rate)
        self.clock = TickClock(self.game.tick_rate) if use_clock else None
        self.seq = 0
        self.T = 0
        self.server_pos: dict[int, tuple[float, float]] = {self.world.tick: self.own()}
        self.predicted: dict[int, tuple[float, float]] = {}
        self.errors: list[float] = []
        self.heading = 0.0

    def own(self) -> tuple[float, float]:
        a = self.world.arrays
        return float(a["x"][self.own_slot]), float(a["y"][self.own_slot])

    def iteration(self, send_inputs: bool) -> None:
        T = self.T
        # server
        up: list[Any] = self.up.deliver(T)
        for seq, ct, dx, dy in up:
            self.send(self.eid, seq, ct, dx, dy)
        self.step()
        a = self.world.arrays
        k = self.world.tick
        self.server_pos[k] = self.own()
        if k % self.send_every == 0:
            s = self.own_slot
            state = (float(a["x"][s]), float(a["y"][s]), float(a["vx"][s]), float(a["vy"][s]))
            self.down.send(T, (k, int(a["last_seq"][s]), state))
        # client
        down: list[Any] = self.down.deliver(T)
        for k_snap, ack, (x, y, vx, vy) in down:
            if self.clock is not None:
                self.clock.observe(k_snap, (T + 1) / 60.0)  # the caller's clock, in seconds
            err = self.pred.on_snapshot(k_snap, ack, x, y, vx, vy)
            if err is not None:
                self.errors.append(err)
        if self.clock is not None:
            if self.clock.offset is None:  # no snapshot yet: nothing to predict from
                send_inputs = False
            start = self.clock.input_tick((T + 1) / 60.0, 2 * self.latency / 60.0)
        else:
            start = T + self.latency + 1
        if send_inputs and T % self.input_every == 0:
            if self.rng.random() < 0.3:
                self.heading += self.rng.uniform(-2.0, 2.0)
            mag = float(self.rng.uniform(0.3, 0.99))
            dx, dy = np.float32(mag * math.cos(self.heading)), np.float32(mag * math.sin(self.heading))
            self.seq += 1
            self.up.send(T, (self.seq, T, dx, dy))
            self.pred.send(self.seq, float(dx), float(dy), start)
        if self.pred.initialized:
            self.predicted[start] = self.pred.advance(start)
        self.T += 1

    def run(self, ticks: int, send_inputs: bool = True) -> None:
        for _ in range(ticks):
            self.iteration(send_inputs)


@pytest.mark.parametrize("game", ["startales", "wander"])
def test_no_loss_constant_latency_prediction_is_exact(game: str) -> None:
    sim = Sim(game, latency=5)
    sim.run(600)
    sim.run(60, send_inputs=False)
    assert sim.pred.snapshots > 100
    assert sim.pred.max_error == 0.0  # same rule, same float32 operations, same ticks
    assert sim.pred.corrections == 0
    # every predicted position equals the server's at that tick, bit for bit
    checked = [t for t in sim.predicted if t in sim.server_pos]
    assert len(checked) > 500
    for t in checked:
        assert sim.predicted[t] == sim.server_pos[t], t
    # the ship really moved
    xs = [sim.server_pos[t][0] for t in checked]
    assert max(xs) - min(xs) > 5.0


@pytest.mark.parametrize("game", ["startales", "wander"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_both_directions_reconciliation_converges(game: str, seed: int) -> None:
    sim = Sim(game, latency=6, loss_up=0.2, loss_down=0.2, seed=seed)
    sim.run(600)
    assert sim.pred.corrections > 0  # lost inputs were mispredicted ...
    sim.run(3 * sim.pred.expire_ticks + 4 * sim.latency, send_inputs=False)
    # ... and once inputs stop, the prediction converges to the server's state exactly
    assert sim.pred.pending == []
    assert_converged(sim)
    assert sim.errors[-3:] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("game", ["startales", "wander"])
def test_reordered_snapshots_and_acks_converge(game: str) -> None:
    sim = Sim(game, latency=4, jitter=6, loss_down=0.1, seed=11)
    sim.run(600)
    assert sim.pred.stale > 0  # out-of-order snapshots arrived and were ignored
    sim.run(3 * sim.pred.expire_ticks + 30, send_inputs=False)
    assert_converged(sim)


def test_stale_snapshot_and_lost_snapshot_direct() -> None:
    game = make_game("startales", CONFIGS["startales"])
    p = ShipPredictor(game.wire_spec()["move"], game.tick_rate)
    p.on_snapshot(10, 0, 100.0, 100.0, 0.0, 0.0)
    p.send(1, 1.0, 0.0, 11)
    p.send(2, 0.0, 1.0, 14)
    x1, _ = p.advance(20)
    assert x1 > 100.0
    # snapshot 13 lost; 16 acks seq 1 only (seq 2 arrived late): replay from the server's state
    before = p.position
    err = p.on_snapshot(16, 1, 100.5, 100.0, 10.0, 0.0)
    assert err is not None and err > 0.0 and p.position != before
    assert [q.seq for q in p.pending] == [2]
    # an older snapshot arriving late is ignored
    assert p.on_snapshot(13, 1, 0.0, 0.0, 0.0, 0.0) is None
    assert p.stale == 1


def test_tick_clock_estimate_keeps_error_small() -> None:
    sim = Sim("startales", latency=5, use_clock=True, seed=5)
    sim.run(600)
    # the clock's estimate is off by at most a tick or so: small corrections only
    assert sim.pred.mean_error < 0.5
    sim.run(60, send_inputs=False)
    assert_converged(sim)


def test_predictor_rejects_a_game_without_a_move_rule() -> None:
    with pytest.raises(ValueError):
        ShipPredictor({"rule": "none"}, 60)
    with pytest.raises(ValueError):
        ShipPredictor({"rule": "teleport", "bounds": [0, 0, 1, 1]}, 60)


# -- interpolation --------------------------------------------------------------------------------


def _line(t: float, eid: int) -> tuple[float, float]:
    return 10.0 + 0.5 * t + eid, 20.0 - 0.25 * t


def test_interpolator_is_linear_and_smooth_between_snapshots() -> None:
    itp = Interpolator(default_delay_ticks(60, 20))
    assert itp.delay_ticks == 6.0
    ids = np.array([3, 1, 2], dtype=np.uint32)
    for k in range(0, 60, 3):
        if k == 30:
            continue  # a lost snapshot: interpolate across the gap
        xy = [_line(k, int(e)) for e in ids]
        itp.push(k, ids, np.array([p[0] for p in xy]), np.array([p[1] for p in xy]))
    prev = None
    for i in range(0, 400):
        rt = 2.0 + i * 0.125
        if rt > itp.latest_tick:
            break
        s = itp.sample(rt)
        assert list(s.ids) == [1, 2, 3]
        for j, e in enumerate(s.ids):
            ex, ey = _line(rt, int(e))
            assert s.x[j] == pytest.approx(ex, abs=1e-9) and s.y[j] == pytest.approx(ey, abs=1e-9)
        if prev is not None:  # no jumps: each step moves by exactly the velocity × 0.125 tick
            assert np.allclose(s.x - prev.x, 0.5 * 0.125) and np.allclose(s.y - prev.y, -0.25 * 0.125)
        prev = s
    assert itp.render_tick() == itp.latest_tick - 6.0


def test_interpolator_enter_leave_and_out_of_order() -> None:
    itp = Interpolator(6.0)
    itp.push(0, np.array([1, 2], dtype=np.uint32), np.array([0.0, 5.0]), np.array([0.0, 5.0]))
    itp.push(6, np.array([2, 3], dtype=np.uint32), np.array([11.0, 50.0]), np.array([5.0, 50.0]))
    assert itp.push(3, np.array([1, 2], dtype=np.uint32), np.array([3.0, 8.0]), np.array([0.0, 5.0]))
    assert not itp.push(3, np.array([1], dtype=np.uint32), np.array([0.0]), np.array([0.0]))  # duplicate
    assert itp.ticks == [0, 3, 6]
    s = itp.sample(1.5)
    assert list(s.ids) == [1, 2] and s.x[0] == 1.5 and s.x[1] == 6.5
    s = itp.sample(4.5)  # 1 leaves at 6: held at its last position; 3 enters at 6: not yet
    assert list(s.ids) == [1, 2] and s.x[0] == 3.0 and s.x[1] == 9.5
    s = itp.sample(6.0)
    assert list(s.ids) == [2, 3] and list(s.x) == [11.0, 50.0]
    assert not s.extrapolated


def test_interpolator_extrapolation_is_bounded() -> None:
    itp = Interpolator(6.0, max_extrapolate_ticks=4.0)
    ids = np.array([7], dtype=np.uint32)
    itp.push(0, ids, np.array([0.0]), np.array([0.0]))
    itp.push(3, ids, np.array([3.0]), np.array([-3.0]))
    s = itp.sample(5.0)
    assert s.extrapolated and s.x[0] == 5.0 and s.y[0] == -5.0
    s = itp.sample(100.0)  # starved for long: stops 4 ticks past the newest snapshot
    assert s.x[0] == 7.0 and s.y[0] == -7.0
    assert itp.sample(-5.0).x[0] == 0.0  # before the buffer: the oldest snapshot
    assert Interpolator(6.0).sample(1.0).ids.size == 0


def test_interpolator_capacity_drops_oldest() -> None:
    itp = Interpolator(6.0, capacity=4)
    ids = np.array([1], dtype=np.uint32)
    for k in range(10):
        itp.push(k, ids, np.array([float(k)]), np.array([0.0]))
    assert itp.ticks == [6, 7, 8, 9]
    assert not itp.push(2, ids, np.array([0.0]), np.array([0.0]))
