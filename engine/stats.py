"""Per-tick figures kept cheaply: fixed-size rings of durations plus monotonic counters.

Recording is two array stores per tick; percentiles are computed only when someone asks (/stats).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Ring:
    __slots__ = ("_buf", "_i", "_n")

    def __init__(self, size: int) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self._i = 0
        self._n = 0

    def add(self, value: float) -> None:
        self._buf[self._i] = value
        self._i = (self._i + 1) % self._buf.shape[0]
        if self._n < self._buf.shape[0]:
            self._n += 1

    def newest(self, k: int) -> np.ndarray:
        """The newest min(k, kept) values, oldest first (a copy)."""
        k = min(k, self._n)
        if k <= 0:
            return self._buf[:0].copy()
        idx = (np.arange(self._i - k, self._i)) % self._buf.shape[0]
        return self._buf[idx]

    def values(self) -> np.ndarray:
        return self._buf[: self._n] if self._n < self._buf.shape[0] else self._buf

    def percentiles_ms(self) -> dict[str, float]:
        v = self.values()
        if v.size == 0:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        p50, p99 = np.percentile(v, [50.0, 99.0])
        return {"p50": float(p50) * 1e3, "p99": float(p99) * 1e3, "max": float(v.max()) * 1e3}


class TickStats:
    """Everything /stats reports. Rings cover the last ~17 s at 60 Hz."""

    def __init__(self, window: int = 1024) -> None:
        self.tick_dur = Ring(window)
        self.send_dur = Ring(window)
        self.tick_starts = Ring(window)  # loop time at each tick: achieved Hz over the window
        self.ticks = 0
        self.sends = 0
        self.bytes_out = 0
        self.snapshots_sent = 0
        self.snapshots_skipped = 0
        self.inputs_accepted = 0
        self.inputs_refused = 0
        self.inputs_dropped = 0  # input buffer full: refused before reaching the sim
        self.protocol_errors = 0
        self.auth_refusals = 0
        self.slow_disconnects = 0
        self.joins = 0
        self.leaves = 0
        # Of connections already closed (open ones are read from their connection at scrape time).
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0
        self.closed_rate_limited = 0

    def connection_closed(self, bytes_in: int, bytes_out: int, rate_limited: int) -> None:
        self.closed_bytes_in += bytes_in
        self.closed_bytes_out += bytes_out
        self.closed_rate_limited += rate_limited

    def achieved_hz(self) -> float:
        t = np.sort(self.tick_starts.values())
        if t.size < 2 or t[-1] <= t[0]:
            return 0.0
        return float((t.size - 1) / (t[-1] - t[0]))

    def as_dict(self) -> dict[str, Any]:
        tick = self.tick_dur.percentiles_ms()
        send = self.send_dur.percentiles_ms()
        return {
            "ticks": self.ticks,
            "tick_hz": round(self.achieved_hz(), 3),
            "tick_p50_ms": round(tick["p50"], 4),
            "tick_p99_ms": round(tick["p99"], 4),
            "tick_max_ms": round(tick["max"], 4),
            "send_p50_ms": round(send["p50"], 4),
            "send_p99_ms": round(send["p99"], 4),
            "send_max_ms": round(send["max"], 4),
            "sends": self.sends,
            "bytes_out": self.bytes_out,
            "snapshots_sent": self.snapshots_sent,
            "snapshots_skipped": self.snapshots_skipped,
            "inputs_accepted": self.inputs_accepted,
            "inputs_refused": self.inputs_refused,
            "inputs_dropped": self.inputs_dropped,
            "protocol_errors": self.protocol_errors,
            "auth_refusals": self.auth_refusals,
            "slow_disconnects": self.slow_disconnects,
            "joins": self.joins,
            "leaves": self.leaves,
        }
