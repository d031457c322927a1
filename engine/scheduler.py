"""The ticks of many campaigns on one loop: staggered across the tick period, each on its own budget.

Every campaign keeps its own fixed-step schedule (engine/ticker.py) for its ticks and its sub-sends.
Campaigns are spread over `phases` slots of the tick period (the least used slot first), so a host
of a hundred campaigns runs a few of them per wake-up instead of all of them at the top of each
period; campaigns in the same slot share their deadlines and one wake-up.

Isolation: each campaign may spend at most `share` of the wall clock on its ticks and sends (a
token bucket of CPU seconds, refilled at `share` per second, holding up to `burst_s`). A tick due
while its campaign's bucket is empty is skipped and counted as *throttled* for that campaign (its
world runs slower), so a campaign whose step is too expensive cannot take the others' time; they
keep their schedule. A tick that took longer than the tick period is an *overrun* of its own
campaign, and such a campaign runs at most one tick per round: the others run between two of its
ticks, and are late by at most one of them (within their catch-up bound of `max_catchup` periods,
they lose nothing; a single tick longer than that delays everyone, since nothing preempts it).
With `share=None` (one campaign per process, `arbiter serve`) there is no budget.

Pure scheduling: the caller passes the clock and a timer, and does the sleeping (engine/host.py).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from engine.ticker import FixedStep


class Runnable(Protocol):
    def tick(self) -> None:
        """Run one tick."""
        ...

    def sub_send(self) -> None:
        """Run one staggered sub-send."""
        ...


R = TypeVar("R", bound=Runnable)


@dataclass(slots=True, eq=False)
class Slot(Generic[R]):
    """One campaign in the schedule and what it cost."""

    key: str
    target: R
    phase: int
    ticker: FixedStep
    sender: FixedStep
    tokens: float = 0.0
    tokens_at: float = 0.0
    throttled: int = 0  # ticks skipped because the campaign was over its share
    overruns: int = 0  # ticks that took longer than the tick period
    busy_s: float = 0.0  # seconds spent in its ticks and sends
    heavy: bool = False  # its last tick overran the period: served last in a round
    next_at: float = 0.0  # its next tick or sub-send
    live: bool = True  # still scheduled


class Scheduler(Generic[R]):
    def __init__(
        self,
        tick_rate: float,
        send_rate: float,
        groups: int,
        *,
        phases: int = 16,
        share: float | None = None,
        burst_s: float = 0.05,
        max_catchup: int = 5,
        slack_s: float = 0.0,
        timer: Callable[[], float],
    ) -> None:
        """`slack_s`: what is due within this much is run now (a loop's timers are only this precise:
        uvloop's are to the millisecond, so waiting for less would spin)."""
        self.tick_rate = tick_rate
        self.period = 1.0 / tick_rate
        self.send_rate = send_rate
        self.groups = max(1, groups)
        self.phases = max(1, phases)
        self.share = share
        self.burst_s = burst_s
        self.max_catchup = max_catchup
        self.timer = timer
        self.slack = slack_s
        self.base: float | None = None  # the grid every phase is measured from
        self._slots: dict[str, Slot[R]] = {}
        self._by_phase: list[list[Slot[R]]] = [[] for _ in range(self.phases)]
        # Every live slot once, by its next deadline (removed ones are dropped when they surface).
        self._heap: list[tuple[float, int, Slot[R]]] = []
        self._seq = itertools.count()

    def add(self, key: str, target: R, now: float, groups: int | None = None) -> Slot[R]:
        """Schedule `target` from the next start of the least used phase slot (`groups`: its send
        groups, default the scheduler's)."""
        if key in self._slots:
            raise KeyError(f"{key!r} is scheduled already")
        if self.base is None:
            self.base = now
        phase = min(range(self.phases), key=lambda p: (len(self._by_phase[p]), p))
        offset = phase * self.period / self.phases
        # The first deadline of this phase at or after now, on the common grid.
        k = -(-(now - self.base - offset) // self.period)  # ceil
        t0 = self.base + offset + max(0.0, k) * self.period
        ticker = FixedStep(self.tick_rate, self.max_catchup)
        ticker.start(t0)
        g = max(1, groups or self.groups)
        sender = FixedStep(self.send_rate * g, g)
        sender.start(t0)
        slot = Slot(key, target, phase, ticker, sender, tokens=self.burst_s, tokens_at=now, next_at=t0)
        self._slots[key] = slot
        self._by_phase[phase].append(slot)
        heapq.heappush(self._heap, (t0, next(self._seq), slot))
        return slot

    def remove(self, key: str) -> Slot[R] | None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            slot.live = False
            self._by_phase[slot.phase].remove(slot)
        return slot

    def next_deadline(self) -> float | None:
        """When the next tick or sub-send of any campaign is due (None: nothing scheduled)."""
        heap = self._heap
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, clock: Callable[[], float]) -> None:
        """Run every tick and sub-send that is due, campaign by campaign in deadline order."""
        slack = self.slack

        def now() -> float:
            return clock() + slack

        t = now()
        heap = self._heap
        due: list[Slot[R]] = []
        while heap and heap[0][0] <= t:
            slot = heapq.heappop(heap)[2]
            if slot.live:
                due.append(slot)
        # Campaigns whose last tick overran go last: the ones that fell due meanwhile go first.
        if len(due) > 1:
            due.sort(key=lambda s: (s.heavy, s.next_at))
        for slot in due:
            self._service(slot, now)
            if slot.live:
                slot.next_at = at = min(slot.ticker.next_deadline(), slot.sender.next_deadline())
                heapq.heappush(heap, (at, next(self._seq), slot))

    def _service(self, slot: Slot[R], now: Callable[[], float]) -> None:
        timer, period, share = self.timer, self.period, self.share
        t = now()
        if share is not None:
            slot.tokens = min(self.burst_s, slot.tokens + (t - slot.tokens_at) * share)
            slot.tokens_at = t

        def timed(run: Callable[[], None]) -> float:
            t0 = timer()
            run()
            spent = timer() - t0
            slot.busy_s += spent
            if share is not None:
                slot.tokens -= spent
            return spent

        target = slot.target
        n = slot.ticker.due(t)
        for i in range(n):
            # Over its share (an empty bucket) a tick is skipped; and a campaign whose ticks overrun
            # the period runs one per round, so the others run between two of them.
            if share is not None and slot.tokens <= 0.0:
                slot.throttled += 1
                continue
            slot.heavy = timed(target.tick) > period
            if slot.heavy:
                slot.overruns += 1
                if share is not None and i + 1 < n:
                    slot.throttled += n - i - 1
                    break
        # Every due sub-send runs, even late (up to one round of groups): a sub-send skipped here
        # would be a snapshot lost for a whole group of clients.
        for _ in range(slot.sender.due(now())):
            timed(target.sub_send)
