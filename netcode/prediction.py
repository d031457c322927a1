"""Client-side prediction, reconciliation and interpolation (Sans-I/O, clock-free).

- `ShipPredictor`: the client's own ship. Inputs are applied locally the moment they are sent,
  with the server's own movement rule (the welcome spec's "move" binding: `sim.movement.thrust_step`
  or `velocity_step`, the very functions the server kernels call), kept until the server
  acknowledges them, and replayed on top of every authoritative snapshot (reconciliation).
- `Interpolator`: remote entities, rendered ``delay_ticks`` behind the newest snapshot by linear
  interpolation between the two snapshots around the render tick.
- `TickClock`: estimates the server tick from snapshot arrivals and the caller's clock.

Time is always an argument (ticks, or the caller's seconds for `TickClock`). See docs/prediction.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from sim.movement import thrust_step, velocity_step

__all__ = [
    "Interpolated",
    "Interpolator",
    "PendingInput",
    "ShipPredictor",
    "TickClock",
    "default_delay_ticks",
]

F32 = np.float32


@njit(cache=True)
def _replay_thrust(
    x: np.float32,
    y: np.float32,
    vx: np.float32,
    vy: np.float32,
    seg_tx: np.ndarray,
    seg_ty: np.ndarray,
    seg_n: np.ndarray,
    dt: np.float32,
    bounds: np.ndarray,
    accel: np.float32,
    max_speed: np.float32,
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """The "thrust" rule: ``seg_n[k]`` ticks with thrust ``(seg_tx[k], seg_ty[k])`` for each segment k."""
    x0, y0, x1, y1 = bounds[0], bounds[1], bounds[2], bounds[3]
    for k in range(seg_n.shape[0]):
        tx = seg_tx[k]
        ty = seg_ty[k]
        for _ in range(seg_n[k]):
            x, y, vx, vy = thrust_step(x, y, vx, vy, tx, ty, dt, x0, y0, x1, y1, accel, max_speed)
    return x, y, vx, vy


@njit(cache=True)
def _replay_velocity(
    x: np.float32,
    y: np.float32,
    vx: np.float32,
    vy: np.float32,
    seg_tx: np.ndarray,
    seg_ty: np.ndarray,
    seg_n: np.ndarray,
    dt: np.float32,
    bounds: np.ndarray,
    speed: np.float32,
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """The "velocity" rule: velocity = input × speed (as the server's `accept` sets it), then steps."""
    x0, y0, x1, y1 = bounds[0], bounds[1], bounds[2], bounds[3]
    for k in range(seg_n.shape[0]):
        if seg_n[k] <= 0:
            continue
        vx = seg_tx[k] * speed
        vy = seg_ty[k] * speed
        for _ in range(seg_n[k]):
            x, y = velocity_step(x, y, vx, vy, dt, x0, y0, x1, y1)
    return x, y, vx, vy


@dataclass(slots=True)
class PendingInput:
    seq: int
    dx: np.float32
    dy: np.float32
    tick: int  # the server tick whose step the client expects to apply it first


class ShipPredictor:
    """Prediction and reconciliation of the client's own ship.

    Timeline: server ticks. State "at tick t" is the state after the server's step that produced
    tick t (what a snapshot with ``k == t`` shows). An input sent with ``tick = s`` is expected to
    be applied first by the step producing tick ``s`` and held (as the server does) until the
    next accepted input.

        p = ShipPredictor(welcome.spec["move"], welcome.tick_rate)
        seq = client.send_input(dx, dy)           # the SDK's seq
        p.send(seq, dx, dy, tick=input_tick)      # input_tick: see TickClock.input_tick
        p.on_snapshot(snap.tick, snap.ack_seq, x, y, vx, vy)   # own record of the snapshot
        x, y = p.advance(render_tick_of_own_ship)
    """

    def __init__(
        self,
        move: Mapping[str, Any],
        tick_rate: int,
        epsilon: float = 1e-3,
        max_pending: int = 1024,
        expire_ticks: int = 12,
    ) -> None:
        """`move`: the welcome spec's move binding ("velocity" or "thrust"; see docs/protocol.md)."""
        self.rule = str(move.get("rule", "none"))
        if self.rule not in ("velocity", "thrust"):
            raise ValueError(f"no prediction for the move rule {self.rule!r}")
        self.dt = F32(1.0 / int(tick_rate))  # as the game computes it
        self.bounds = np.array([float(b) for b in move["bounds"]], dtype=np.float32)
        if self.rule == "thrust":
            self.accel = F32(float(move["accel"]))
            self.max_speed = F32(float(move["max_speed"]))
        else:
            self.speed = F32(float(move["speed"]))
        self.epsilon = float(epsilon)
        self.max_pending = int(max_pending)
        self.expire_ticks = int(expire_ticks)
        self.pending: list[PendingInput] = []
        self._sent: dict[int, tuple[np.float32, np.float32]] = {}  # seq -> thrust, recent inputs
        self.initialized = False
        # predicted state at `tick`
        self.tick = 0
        self.x = self.y = self.vx = self.vy = F32(0.0)
        # the last authoritative state (tick, ack seq, held thrust of the acknowledged input)
        self.server_tick = -1
        self.ack_seq = 0
        self.ack_dx = self.ack_dy = F32(0.0)
        # statistics
        self.snapshots = 0  # reconciliations done
        self.corrections = 0  # ... whose error exceeded epsilon
        self.stale = 0  # snapshots ignored (older than one already applied)
        self.dropped_inputs = 0  # pending inputs dropped because the buffer was full
        self.expired_inputs = 0  # pending inputs given up (lost, refused or very late)
        self.last_error = 0.0
        self.max_error = 0.0
        self.sum_error = 0.0

    # -- statistics -------------------------------------------------------------------------------
    @property
    def correction_rate(self) -> float:
        return self.corrections / self.snapshots if self.snapshots else 0.0

    @property
    def mean_error(self) -> float:
        return self.sum_error / self.snapshots if self.snapshots else 0.0

    def stats(self) -> dict[str, float | int]:
        return {
            "snapshots": self.snapshots,
            "corrections": self.corrections,
            "correction_rate": self.correction_rate,
            "mean_error": self.mean_error,
            "max_error": self.max_error,
            "last_error": self.last_error,
            "stale": self.stale,
            "expired_inputs": self.expired_inputs,
            "pending": len(self.pending),
        }

    @property
    def position(self) -> tuple[float, float]:
        return float(self.x), float(self.y)

    # -- inputs -----------------------------------------------------------------------------------
    def send(self, seq: int, dx: float, dy: float, tick: int) -> None:
        """Record an input as sent (seq increasing), to take effect at server tick ``tick``."""
        if self.initialized and tick - 1 > self.tick:
            self.advance(tick - 1)  # the old thrust holds until the new input applies
        p = PendingInput(int(seq), F32(dx), F32(dy), int(tick))
        self.pending.append(p)
        self._sent[p.seq] = (p.dx, p.dy)
        if len(self._sent) > 2 * self.max_pending:
            del self._sent[next(iter(self._sent))]
        if len(self.pending) > self.max_pending:
            del self.pending[0]
            self.dropped_inputs += 1

    def advance(self, tick: float) -> tuple[float, float]:
        """Predict up to ``floor(tick)`` (never backwards); returns the predicted position."""
        t = math.floor(tick)
        if self.initialized and t > self.tick:
            self.x, self.y, self.vx, self.vy = self._run(self.tick, t, self.x, self.y, self.vx, self.vy)
            self.tick = t
        return float(self.x), float(self.y)

    # -- reconciliation ---------------------------------------------------------------------------
    def on_snapshot(self, tick: int, ack_seq: int, x: float, y: float, vx: float, vy: float) -> float | None:
        """Rewind to the server's state at ``tick``, drop acknowledged inputs, replay the rest up to
        the current predicted tick. Returns the correction (distance between the position predicted
        before and after, at the current predicted tick), or None for a stale snapshot."""
        tick, ack_seq = int(tick), int(ack_seq)
        if tick <= self.server_tick or ack_seq < self.ack_seq:
            self.stale += 1
            return None
        self._acknowledge(ack_seq, tick)
        self.server_tick = tick
        sx, sy, svx, svy = F32(x), F32(y), F32(vx), F32(vy)
        if not self.initialized:
            self.initialized = True
            self.tick = tick
            self.x, self.y, self.vx, self.vy = sx, sy, svx, svy
            return 0.0
        target = max(self.tick, tick)
        old_x, old_y = self._run(self.tick, target, self.x, self.y, self.vx, self.vy)[:2]
        self.x, self.y, self.vx, self.vy = self._run(tick, target, sx, sy, svx, svy)
        self.tick = target
        err = math.hypot(float(self.x) - float(old_x), float(self.y) - float(old_y))
        self.snapshots += 1
        self.last_error = err
        self.sum_error += err
        if err > self.max_error:
            self.max_error = err
        if err > self.epsilon:
            self.corrections += 1
        return err

    def _acknowledge(self, ack_seq: int, tick: int) -> None:
        """Drop acknowledged inputs, and those the server should long have applied (lost in
        transit or refused: an input is atomic, a refused one is never acknowledged)."""
        if ack_seq != self.ack_seq:
            thrust = self._sent.get(ack_seq)
            if thrust is not None:
                self.ack_dx, self.ack_dy = thrust
            self.ack_seq = ack_seq
        limit = tick - self.expire_ticks
        keep = []
        for p in self.pending:
            if p.seq <= ack_seq:
                continue
            if p.tick < limit:
                self.expired_inputs += 1
                continue
            keep.append(p)
        self.pending = keep

    # -- the rule ---------------------------------------------------------------------------------
    def _segments(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thrust per tick of (t0, t1] as runs: the acknowledged input, then pending inputs from
        their expected tick (never before the last server tick + 1, since the server has not
        applied them by then)."""
        floor = self.server_tick + 1
        txs, tys, ns = [], [], []
        cur_dx, cur_dy, t = self.ack_dx, self.ack_dy, t0
        for p in self.pending:
            start = max(p.tick, floor, t0 + 1)
            if start > t1:
                break
            if start - 1 > t:
                txs.append(cur_dx)
                tys.append(cur_dy)
                ns.append(start - 1 - t)
                t = start - 1
            cur_dx, cur_dy = p.dx, p.dy
        if t1 > t:
            txs.append(cur_dx)
            tys.append(cur_dy)
            ns.append(t1 - t)
        return np.array(txs, dtype=np.float32), np.array(tys, dtype=np.float32), np.array(ns, dtype=np.int64)

    def _run(
        self, t0: int, t1: int, x: np.float32, y: np.float32, vx: np.float32, vy: np.float32
    ) -> tuple[np.float32, np.float32, np.float32, np.float32]:
        if t1 <= t0:
            return x, y, vx, vy
        tx, ty, n = self._segments(t0, t1)
        if self.rule == "thrust":
            r = _replay_thrust(x, y, vx, vy, tx, ty, n, self.dt, self.bounds, self.accel, self.max_speed)
        else:
            r = _replay_velocity(x, y, vx, vy, tx, ty, n, self.dt, self.bounds, self.speed)
        return F32(r[0]), F32(r[1]), F32(r[2]), F32(r[3])


# -- interpolation ---------------------------------------------------------------------------------


def default_delay_ticks(tick_rate: float, send_rate: float, intervals: float = 2.0) -> float:
    """Interpolation delay: ``intervals`` send intervals, in ticks."""
    return intervals * tick_rate / send_rate


@dataclass(frozen=True, slots=True)
class Interpolated:
    tick: float  # the render tick sampled
    ids: np.ndarray  # uint32, ascending
    x: np.ndarray  # float64
    y: np.ndarray
    extrapolated: bool  # render tick beyond the newest snapshot


@dataclass(frozen=True, slots=True)
class _Snap:
    tick: int
    ids: np.ndarray  # sorted
    x: np.ndarray
    y: np.ndarray


class Interpolator:
    """Snapshot buffer of remote entities, sampled at ``render_tick = latest - delay_ticks``.

    Visibility follows the snapshot at or before the render tick: an entity appears when the render
    tick reaches the first snapshot holding it and disappears when it reaches the first snapshot
    without it. Between two snapshots positions are linear; an entity absent from the later one
    holds its last position. Past the newest snapshot (starved buffer) entities continue with the
    velocity of the last two snapshots for at most ``max_extrapolate_ticks``, then hold.
    """

    def __init__(self, delay_ticks: float, capacity: int = 32, max_extrapolate_ticks: float = 6.0) -> None:
        self.delay_ticks = float(delay_ticks)
        self.capacity = int(capacity)
        self.max_extrapolate_ticks = float(max_extrapolate_ticks)
        self._snaps: list[_Snap] = []

    @property
    def latest_tick(self) -> int:
        return self._snaps[-1].tick if self._snaps else -1

    @property
    def ticks(self) -> list[int]:
        return [s.tick for s in self._snaps]

    def render_tick(self, latest_tick_estimate: float | None = None) -> float:
        """The tick to render: (estimated) newest server tick minus the delay."""
        base = self.latest_tick if latest_tick_estimate is None else latest_tick_estimate
        return float(base) - self.delay_ticks

    def push(self, tick: int, ids: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
        """Add one snapshot (any arrival order). False when it is a duplicate or older than the buffer."""
        tick = int(tick)
        snaps = self._snaps
        if snaps and (tick < snaps[0].tick and len(snaps) >= self.capacity):
            return False
        ticks = [s.tick for s in snaps]
        i = int(np.searchsorted(np.asarray(ticks, dtype=np.int64), tick)) if ticks else 0
        if i < len(snaps) and snaps[i].tick == tick:
            return False
        ids = np.asarray(ids, dtype=np.uint32)
        order = np.argsort(ids, kind="stable")
        snap = _Snap(tick, ids[order], np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order])
        snaps.insert(i, snap)
        if len(snaps) > self.capacity:
            del snaps[0]
        return True

    def push_records(self, tick: int, records: np.ndarray, exclude: int | None = None) -> bool:
        """`push` from snapshot records (fields id, x, y), optionally without the own ship."""
        rec = records if exclude is None else records[records["id"] != exclude]
        return self.push(tick, rec["id"], rec["x"], rec["y"])

    def sample(self, render_tick: float) -> Interpolated:
        snaps = self._snaps
        rt = float(render_tick)
        if not snaps:
            e = np.zeros(0)
            return Interpolated(rt, np.zeros(0, dtype=np.uint32), e, e, False)
        if rt <= snaps[0].tick:
            s = snaps[0]
            return Interpolated(rt, s.ids.copy(), s.x.copy(), s.y.copy(), False)
        ticks = np.fromiter((s.tick for s in snaps), dtype=np.int64, count=len(snaps))
        ia = int(np.searchsorted(ticks, rt, side="right")) - 1  # last snapshot with tick <= rt
        a = snaps[ia]
        x, y = a.x.copy(), a.y.copy()
        if ia + 1 < len(snaps):
            b = snaps[ia + 1]
            alpha = (rt - a.tick) / (b.tick - a.tick)
            ia_idx, ib_idx = _match(a.ids, b.ids)
            x[ia_idx] += (b.x[ib_idx] - a.x[ia_idx]) * alpha
            y[ia_idx] += (b.y[ib_idx] - a.y[ia_idx]) * alpha
            return Interpolated(rt, a.ids.copy(), x, y, False)
        # starved: extrapolate from the last two snapshots, bounded
        if ia >= 1:
            p = snaps[ia - 1]
            ahead = min(rt - a.tick, self.max_extrapolate_ticks)
            ia_idx, ip_idx = _match(a.ids, p.ids)
            span = a.tick - p.tick
            x[ia_idx] += (a.x[ia_idx] - p.x[ip_idx]) * (ahead / span)
            y[ia_idx] += (a.y[ia_idx] - p.y[ip_idx]) * (ahead / span)
        return Interpolated(rt, a.ids.copy(), x, y, rt > a.tick)


def _match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indexes (ia, ib) with a[ia] == b[ib], for two ascending id arrays."""
    _, ia, ib = np.intersect1d(a, b, assume_unique=True, return_indices=True)
    return ia, ib


# -- clock -----------------------------------------------------------------------------------------


class TickClock:
    """Server tick estimate from snapshot arrivals, in the caller's clock (seconds).

    ``latest(now)`` ≈ the tick of the freshest snapshot that could have arrived by ``now`` (the
    server's tick minus the one-way delay). The offset follows a fresher (earlier-than-expected)
    arrival at once and a later one slowly, so jitter does not make the render clock stutter.
    """

    def __init__(self, tick_rate: float, follow: float = 0.05) -> None:
        self.tick_rate = float(tick_rate)
        self.follow = float(follow)
        self.offset: float | None = None

    def observe(self, tick: int, now: float) -> None:
        sample = float(tick) - now * self.tick_rate
        if self.offset is None or sample > self.offset:
            self.offset = sample
        else:
            self.offset += (sample - self.offset) * self.follow

    def latest(self, now: float) -> float:
        return (self.offset or 0.0) + now * self.tick_rate

    def render_tick(self, now: float, delay_ticks: float) -> float:
        """The tick an `Interpolator` should sample (and a SCAN should carry, rounded)."""
        return self.latest(now) - delay_ticks

    def input_tick(self, now: float, rtt: float) -> int:
        """The server tick whose step will first apply an input sent at ``now``: the freshest tick,
        plus one round trip (the snapshot's way here and the input's way there), plus one (inputs
        wait for the next tick)."""
        return math.floor(self.latest(now) + rtt * self.tick_rate) + 1


def warmup() -> None:
    """Compile (or load) the movement kernels the predictor runs, for both rules, before play."""
    bounds = [0.0, 0.0, 1000.0, 1000.0]
    for move in ({"rule": "velocity", "bounds": bounds, "speed": 5.0},
                 {"rule": "thrust", "bounds": bounds, "accel": 200.0, "max_speed": 300.0}):  # fmt: skip
        p = ShipPredictor(move, 60)
        p.on_snapshot(1, 0, 10.0, 10.0, 0.0, 0.0)
        p.send(1, 0.5, 0.5, 2)
        p.on_snapshot(3, 1, 10.0, 10.0, 0.0, 0.0)
