"""Log lines that a remote peer can cause, rate-limited and aggregated per cause.

A peer that sends 400 malformed requests must not write 400 tracebacks: each cause ("http:
malformed request", "ws 1002: reserved bits set", "bug in on_message: KeyError", ...) is logged
in full the first time in a window, then only counted; `flush` writes one line with the counts
per cause. At most `per_second` lines a second (burst `burst`) whatever the causes. The clock is
the caller's (the engine's loop time).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

MAX_CAUSES: Final = 256  # distinct causes kept per window; the rest count as "other"


class LogLimiter:
    def __init__(
        self,
        logger: logging.Logger,
        per_second: float = 2.0,
        burst: float = 10.0,
        window: float = 10.0,
    ) -> None:
        self.log = logger
        self.per_second = per_second
        self.burst = burst
        self.window = window
        self._tokens = burst
        self._at = 0.0
        self._seen: set[str] = set()  # causes logged in full this window
        self._suppressed: Counter[str] = Counter()
        self._window_end = 0.0
        self.total: Counter[str] = Counter()  # every event since start, per cause (for /stats/full)
        self.bugs = 0  # events that carried an exception: unhandled errors caught at the door

    def event(self, now: float, level: int, cause: str, detail: str = "", exc: BaseException | None = None) -> None:
        """One occurrence of `cause`; `exc` when it is a bug (logged with its traceback once)."""
        if len(self.total) < MAX_CAUSES or cause in self.total:
            self.total[cause] += 1
        else:
            self.total["other"] += 1
        if exc is not None:
            self.bugs += 1
        if now >= self._window_end:
            self.flush(now)
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.per_second)
        self._at = now
        if cause in self._seen or self._tokens < 1.0:
            key = cause if len(self._suppressed) < MAX_CAUSES or cause in self._suppressed else "other"
            self._suppressed[key] += 1
            return
        self._tokens -= 1.0
        self._seen.add(cause)
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        self.log.log(level, "%s%s (further ones counted for %.0f s)", cause, f": {detail}" if detail else "",
                     self.window, exc_info=exc_info)  # fmt: skip

    def tick(self, now: float) -> None:
        """Call now and then: ends the window when it is over."""
        if now >= self._window_end:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Write the counts suppressed in the window that ends, one line; start a new window."""
        if self._suppressed:
            top = ", ".join(f"{c} x{n}" for c, n in self._suppressed.most_common(8))
            more = len(self._suppressed) - 8
            self.log.warning(
                "in the last %.0f s: %s%s", self.window, top, f" (+{more} other causes)" if more > 0 else ""
            )
        self._suppressed.clear()
        self._seen.clear()
        self._window_end = now + self.window
