"""Lag compensation: the history ring (sim/history.py), the rewind bound and startales' SCAN action."""

from __future__ import annotations

import numpy as np
import pytest

from netcode.prediction import Interpolator, default_delay_ticks
from sim.entities import SLOT_MASK, EntityTable, add_entity_arrays
from sim.events import EV_REFUSED, REF_NO_TARGET, REF_OUT_OF_REACH, REF_REWIND
from sim.games.startales.constants import ACTION_SCAN, EV_SCANNED, SCAN_RANGE, scan_arg
from sim.history import HISTORY_ARRAYS, add_history, history_rows, position_at, record_history
from sim.registry import make_game
from sim.statehash import state_hash
from sim.world import META_NPC_LO, World
from tests.worlds import Driver

CFG = {"planets": 4, "drones": 16, "max_players": 4, "width": 1000, "height": 1000}


# -- the ring ---------------------------------------------------------------------------------------


def test_history_rows_cover_half_a_second_and_the_rewind() -> None:
    assert history_rows(60, 24) == 32  # 533 ms at 60 Hz
    assert history_rows(30, 12) == 16
    assert history_rows(60, 40) == 64
    assert history_rows(1, 0) == 1


def test_record_lookup_wrap_and_slot_reuse() -> None:
    w = World(8, 1)
    add_entity_arrays(w)
    w.add("x", np.float32)
    w.add("y", np.float32)
    table = EntityTable(w)
    ids = table.spawn_many(4, 2, 6)
    add_history(w, 2, 6, 4)
    a = w.arrays
    hist = tuple(a[n] for n in ("hist_x", "hist_y", "hist_tick", "hist_id", "hist_since"))
    for t in range(1, 7):
        a["x"][2:6] = np.arange(4) + 10 * t
        if t == 4:
            table.despawn(int(ids[1]))
            new = table.spawn(3, 4)  # same slot, next generation
        record_history(t, 2, a["alive"], a["generation"], a["x"], a["y"], *hist)
    assert position_at(w, int(ids[0]), 6, 2) == (60.0, 0.0)
    assert position_at(w, int(ids[0]), 3, 2) == (30.0, 0.0)
    assert position_at(w, int(ids[0]), 2, 2) is None  # wrapped out of the 4-row ring
    assert position_at(w, int(ids[0]), 7, 2) is None  # not recorded yet
    assert position_at(w, int(ids[1]), 3, 2) is None  # the old occupant is gone
    assert position_at(w, new, 4, 2) == (41.0, 0.0)
    assert position_at(w, new, 3, 2) is None  # the new occupant did not exist at tick 3
    assert position_at(w, 0, 5, 2) is None
    assert position_at(w, int(ids[0]) & SLOT_MASK, 5, 2) is None  # generation 0: not an id


def test_history_is_part_of_the_world() -> None:
    game = make_game("startales", CFG)
    w = game.create_world(3)
    assert set(HISTORY_ARRAYS) <= set(w.arrays)
    assert w.arrays["hist_x"].size == game.history_rows * 16
    h0 = state_hash(w)
    w.arrays["hist_x"][5] += 1.0
    assert state_hash(w) != h0
    assert World.from_bytes(w.to_bytes()).arrays["hist_x"][5] == w.arrays["hist_x"][5]


# -- SCAN over a simulated network -----------------------------------------------------------------


class Net(Driver):
    """The real game as a server and one client that interpolates drones (no sockets)."""

    def __init__(self, up: int, down: int, send_every: int = 3, seed: int = 9) -> None:
        super().__init__("startales", CFG, seed, inputs=16, events=256)
        self.eid = self.join()
        self.up_lat, self.down_lat, self.send_every = up, down, send_every
        self.up: list[tuple[int, tuple[int, int, float, float, int, int]]] = []
        self.down: list[tuple[int, int, np.ndarray]] = []
        c = self.game.welcome_constants()
        self.itp = Interpolator(default_delay_ticks(int(c["tick_rate"]), 60 / send_every))
        self.T = 0
        self.at_apply: dict[int, float] = {}  # seq -> server distance ship-drone when applied
        self.drone = 0

    def setup_fleeing_drone(self) -> int:
        """Ship parked; a drone just inside SCAN_RANGE flying straight away at drone speed."""
        a = self.world.arrays
        s = self.eid & SLOT_MASK
        lo = int(a["meta"][META_NPC_LO])
        d = lo + 3
        a["x"][s], a["y"][s], a["vx"][s], a["vy"][s] = 156.0, 500.0, 0.0, 0.0
        a["x"][d], a["y"][d], a["vx"][d], a["vy"][d] = 300.0, 500.0, 40.0, 0.0
        self.drone = int(a["generation"][d]) << 20 | d
        return self.drone

    def dist_now(self) -> float:
        a = self.world.arrays
        s, d = self.eid & SLOT_MASK, self.drone & SLOT_MASK
        return float(np.hypot(a["x"][d] - a["x"][s], a["y"][d] - a["y"][s]))

    def step(self, n: int = 1) -> list[tuple[int, ...]]:
        """One tick of the network: due inputs in, a step, a snapshot out (n must be 1)."""
        T = self.T
        due = [m for m in self.up if m[0] <= T]
        self.up = [m for m in self.up if m[0] > T]
        for _, (seq, ct, dx, dy, act, arg) in due:
            self.send(self.eid, seq, ct, dx, dy, act, arg)
            self.at_apply[seq] = self.dist_now()
        rows = super().step()
        k = self.world.tick
        if k % self.send_every == 0:
            out = np.zeros(self.game.capacity, dtype=self.game.record_dtype)
            n = self.game.replicate(self.world, out)
            self.down.append((T + self.down_lat, k, out[:n].copy()))
        for _, k_snap, rec in [m for m in self.down if m[0] <= T]:
            self.itp.push_records(k_snap, rec[rec["kind"] == 1])
        self.down = [m for m in self.down if m[0] > T]
        self.T += 1
        return rows

    def post(self, seq: int, ct: int, action: int, arg: int) -> None:
        """The client sends an input (it arrives `up` ticks later)."""
        self.up.append((self.T + self.up_lat, (seq, ct, 0.0, 0.0, action, arg)))

    def client_view_distance(self) -> tuple[float, float]:
        """(render tick, distance ship → drone as the client displays it)."""
        rt = self.itp.render_tick()
        s = self.itp.sample(rt)
        i = int(np.searchsorted(s.ids, self.drone))
        assert s.ids[i] == self.drone
        return rt, float(np.hypot(s.x[i] - 156.0, s.y[i] - 500.0))

    def outcome(self) -> list[tuple[int, ...]]:
        return [r for r in self.log if r[1] in (EV_SCANNED, EV_REFUSED)]


def _scan_seen_in_range(up: int, down: int) -> tuple[Net, int, float]:
    net = Net(up, down)
    drone = net.setup_fleeing_drone()
    while len(net.itp.ticks) < 2 or net.itp.render_tick() < net.itp.ticks[0]:
        net.step()
    rt, d_seen = net.client_view_distance()
    assert d_seen < SCAN_RANGE  # the client sees the drone in range ...
    ct = round(rt)  # the tick the client is displaying
    net.post(1, ct, ACTION_SCAN, scan_arg(drone))
    net.post(2, net.world.tick, ACTION_SCAN, scan_arg(drone))  # same scan, no lag compensation
    for _ in range(up + 2):
        net.step()
    return net, ct, d_seen


def test_lag_compensated_scan_at_150ms_rtt_hits_what_the_client_saw() -> None:
    net, ct, _ = _scan_seen_in_range(up=4, down=5)  # RTT 9 ticks = 150 ms at 60 Hz
    assert net.at_apply[1] > SCAN_RANGE  # ... but by the time the scan arrives it is out of range
    ev = net.outcome()
    scanned = [r for r in ev if r[1] == EV_SCANNED]
    assert len(scanned) == 1
    tick, _, eid, target, rewind = scanned[0]
    assert eid == net.eid and target == net.drone
    assert rewind == tick - 1 - ct  # the scan was validated at tick `tick - 1`
    assert 9 < rewind <= net.game.max_rewind  # RTT + interpolation delay (+ snapshot age)
    assert net.a["scans"][net.p(net.eid)] == 1
    # without lag compensation (client_tick = now) the same scan misses
    assert [r[4] for r in ev if r[1] == EV_REFUSED] == [REF_OUT_OF_REACH]


def test_scan_beyond_the_maximum_rewind_is_refused() -> None:
    net = Net(up=4, down=5)
    assert net.game.max_rewind == 24
    up_slow = 4 + net.game.max_rewind  # the same view, but the input arrives too late
    net, _, d_seen = _scan_seen_in_range(up=up_slow, down=5)
    ev = net.outcome()
    assert d_seen < SCAN_RANGE
    assert [r[1] for r in ev] == [EV_REFUSED, EV_REFUSED]
    assert ev[0][4] == REF_REWIND
    assert net.a["scans"][net.p(net.eid)] == 0


def _direct(net: Net, ct: int, arg: int, seq: int = 1, bound: int = 0) -> list[tuple[int, ...]]:
    net.send(net.eid, seq, ct, 0.0, 0.0, ACTION_SCAN, arg, bound=bound)
    return Driver.step(net)


def test_scan_refusals() -> None:
    net = Net(up=0, down=0)
    drone = net.setup_fleeing_drone()
    for _ in range(30):
        net.step()
    now = net.world.tick
    # a drone that was never in range
    a = net.world.arrays
    lo = int(a["meta"][META_NPC_LO])
    far = lo + 7
    a["x"][far], a["y"][far] = 900.0, 900.0
    far_id = int(a["generation"][far]) << 20 | far
    for _ in range(3):
        net.step()
    now = net.world.tick
    assert _direct(net, now - 2, scan_arg(far_id), 1)[-1][3] == REF_OUT_OF_REACH
    now = net.world.tick
    assert _direct(net, now + 1, scan_arg(drone), 2)[-1][3] == REF_REWIND  # from the future
    now = net.world.tick
    assert _direct(net, now - 25, scan_arg(drone), 3)[-1][3] == REF_REWIND  # beyond 24 ticks
    now = net.world.tick
    assert _direct(net, now - 3, scan_arg(0), 4)[-1][3] == REF_NO_TARGET  # planet slot 0, gen 0
    planet = int(a["generation"][0]) << 20
    assert _direct(net, now - 3, scan_arg(planet), 5)[-1][3] == REF_NO_TARGET  # a planet
    assert _direct(net, now - 3, scan_arg(net.eid), 6)[-1][3] == REF_NO_TARGET  # a ship
    assert _direct(net, now - 3, scan_arg(drone + (1 << 20)), 7)[-1][3] == REF_NO_TARGET  # stale gen
    # a refused scan is atomic: nothing applied, seq not taken
    assert int(a["last_seq"][net.eid & SLOT_MASK]) == 0
    # the accepted case, in range at the tick it was seen
    a["x"][net.eid & SLOT_MASK] = a["x"][drone & SLOT_MASK] - 20.0
    a["y"][net.eid & SLOT_MASK] = a["y"][drone & SLOT_MASK]
    now = net.world.tick
    rows = _direct(net, now, scan_arg(drone), 8)
    assert (EV_SCANNED, net.eid, drone, 0) in rows


def test_scan_arg_round_trips_uint32_ids() -> None:
    for eid in (1, (1 << 20) | 5, (4095 << 20) | SLOT_MASK, 1 << 31):
        arg = scan_arg(eid)
        assert -(1 << 31) <= arg < (1 << 31)
        assert np.int64(np.int32(arg)) & 0xFFFFFFFF == eid


def test_scans_are_deterministic_and_survive_save_restore() -> None:
    def run(restore_at: int | None) -> int:
        game = make_game("startales", CFG)
        w = game.create_world(77)
        eids = [game.join(w) for _ in range(3)]
        lo = int(w.arrays["meta"][META_NPC_LO])
        inputs, events = game.input_batch(16), game.event_buffer(256)
        for t in range(120):
            if restore_at == t:
                w = World.from_bytes(w.to_bytes())
            for k, e in enumerate(eids):
                target = lo + (t + k) % 16
                tid = int(w.arrays["generation"][target]) << 20 | target
                act = ACTION_SCAN if (t + k) % 2 else 0
                inputs.add(e, t + 1, max(0, w.tick - (t % 30)), 0.3, -0.2, act, scan_arg(tid))
            events.clear()
            game.step(w, inputs, events)
            inputs.clear()
        return state_hash(w)

    a, b, c = run(None), run(None), run(57)
    assert a == b == c


@pytest.mark.parametrize("tick_rate", [30, 60, 128])
def test_bounds_follow_tick_rate(tick_rate: int) -> None:
    game = make_game("startales", {**CFG, "tick_rate": tick_rate})
    assert game.max_rewind == round(0.4 * tick_rate + 0.4999)
    assert game.history_rows >= max(game.max_rewind + 1, 0.5 * tick_rate)
    c = game.welcome_constants()
    assert c["max_rewind_ticks"] == game.max_rewind and c["scan_range"] == SCAN_RANGE


def test_the_connection_bound_caps_the_rewind_and_replays_the_same() -> None:
    """A client on a ~0 ms link (its connection's bound: 9 ticks) claiming 18 ticks of rewind is
    refused, although 18 is within the game's max_rewind; the same claim within the bound is a
    hit; an unmeasured connection (bound 0) gets max_rewind. The bound is an input column, so
    the journal keeps it and a replay decides the same."""
    net = Net(up=0, down=0)
    drone = net.setup_fleeing_drone()
    a = net.a
    s, d = net.slot(net.eid), net.slot(drone)
    a["vx"][d] = a["vy"][d] = 0.0  # the drone parks next to the ship: only the rewind decides
    a["x"][s], a["y"][s] = a["x"][d] - 20.0, a["y"][d]
    a["vx"][s] = a["vy"][s] = 0.0
    for _ in range(40):
        net.step()
    assert net.game.max_rewind > 18
    assert _direct(net, net.tick - 18, scan_arg(drone), 1, bound=9)[-1][1:] == (net.eid, 0, REF_REWIND)
    assert (EV_SCANNED, net.eid, drone, 9) in _direct(net, net.tick - 9, scan_arg(drone), 2, bound=9)
    assert (EV_SCANNED, net.eid, drone, 18) in _direct(net, net.tick - 18, scan_arg(drone), 3, bound=0)
    assert _direct(net, net.tick - 18, scan_arg(drone), 4, bound=40)[-1][0] == EV_SCANNED  # capped by max_rewind
