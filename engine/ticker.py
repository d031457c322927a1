"""Fixed-timestep scheduling against an injected clock ("Fix Your Timestep", without drift).

Tick k is due at `t0 + k / rate`: deadlines come from the tick count, never from "now + period",
so jitter in wake-ups never accumulates. After an overrun the loop catches up at most
`max_catchup` ticks in a row, then drops the rest of the backlog (counted in `dropped_ticks`)
instead of spiralling: a server that cannot keep up slows the world down rather than freezing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class FixedStep:
    rate: float
    max_catchup: int = 5
    t0: float = 0.0
    ticks: int = 0  # ticks handed out since start
    dropped_ticks: int = 0  # ticks skipped after a long stall
    late_ticks: int = 0  # ticks that ran after their deadline had passed by a whole period
    _started: bool = field(default=False, repr=False)

    @property
    def period(self) -> float:
        return 1.0 / self.rate

    def start(self, now: float) -> None:
        self.t0 = now
        self.ticks = 0
        self._started = True

    def deadline(self, k: int | None = None) -> float:
        """When tick `k` (default: the next one) is due."""
        return self.t0 + (self.ticks if k is None else k) * self.period

    def due(self, now: float) -> int:
        """How many ticks to run now (0..max_catchup); skips what is beyond the catch-up bound."""
        if not self._started:
            self.start(now)
        # The epsilon keeps float rounding from making a tick due exactly at its deadline look early.
        behind = int((now - self.t0) * self.rate + 1e-9) + 1 - self.ticks
        if behind <= 0:
            return 0
        if behind > 1:
            self.late_ticks += behind - 1
        if behind > self.max_catchup:
            skipped = behind - self.max_catchup
            self.dropped_ticks += skipped
            # Re-anchor instead of moving t0 by a float product: the schedule stays exact.
            self.ticks += skipped
            behind = self.max_catchup
        self.ticks += behind
        return behind

    def next_deadline(self) -> float:
        return self.deadline(self.ticks)
