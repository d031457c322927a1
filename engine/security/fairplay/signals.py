"""Statistical signals honest players do not produce.

Input timing regularity: a human's (or a networked client's) inputs arrive with jitter — scheduling,
frame pacing, the network. A macro or a bot driven by an exact timer on the same host as a
tampered client produces inter-arrival times with a coefficient of variation near zero. Over a
window of `window` inputs, a CV below `min_cv` is a signal (one violation per window), weighted
so that on its own it reaches a warning, never a kick (kinds.DEFAULT_WEIGHTS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class TimingStats:
    """Welford's running mean/variance of inter-arrival times over one window."""

    window: int = 1200  # one minute of inputs at 20 Hz
    min_cv: float = 0.01
    last: float = -1.0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, now: float) -> float | None:
        """Record an arrival; at the end of a window, its CV if below `min_cv` (else None)."""
        last, self.last = self.last, now
        if last < 0:
            return None
        dt = now - last
        self.n += 1
        delta = dt - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (dt - self.mean)
        if self.n < self.window:
            return None
        cv = math.sqrt(self.m2 / (self.n - 1)) / self.mean if self.mean > 0 else 0.0
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        return cv if cv < self.min_cv else None
