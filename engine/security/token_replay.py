"""The join-token replay cache: token ids seen within their lifetime, and their file across restarts.

`ReplayCache` is what `engine.security.auth.TokenVerifier` consults. A restart must not reopen a replay
window for tokens still within their lifetime: the server loads the file at start and rewrites it
(write-then-rename, off the loop thread) at most once a second when tokens were used, and at
shutdown; after a `kill -9` at most the last second of joins is forgotten (their tokens could be
replayed until they expire, by design short-lived).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger("arbiter.auth")
FILE_NAME = "token_replay.json"
DEFAULT_REPLAY_CAPACITY: Final = 100_000


class ReplayCache:
    """Token ids seen within their lifetime.

    An entry lives until its token could no longer verify (exp + leeway) and is then forgotten, so
    memory is bounded by the number of tokens live at once; `capacity` bounds it absolutely: when
    full, the soonest-expiring entry is evicted (counted in `evictions` — a non-zero count means the
    capacity is too small for the join rate × token lifetime and a replay window opened).

    `export()` / `import_()` carry the live entries across a restart (`save` / `load` below).
    """

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, jti: object) -> bool:
        return jti in self._until

    def _purge(self, now: float) -> None:
        heap, until = self._heap, self._until
        while heap and heap[0][0] <= now:
            t, jti = heapq.heappop(heap)
            if until.get(jti) == t:
                del until[jti]

    def _evict_one(self) -> None:
        heap, until = self._heap, self._until
        while heap:
            t, jti = heapq.heappop(heap)
            if until.get(jti) == t:
                del until[jti]
                self.evictions += 1
                return

    def _insert(self, jti: str, until: float) -> None:
        while len(self._until) >= self.capacity:
            self._evict_one()
        self._until[jti] = until
        heapq.heappush(self._heap, (until, jti))

    def check_and_add(self, jti: str, until: float, now: float) -> bool:
        """True if `jti` is new (and now remembered until `until`); False if it is a replay."""
        with self._lock:
            self._purge(now)
            if jti in self._until:
                return False
            if until > now:
                self._insert(jti, until)
            return True

    def export(self, now: float | None = None) -> list[tuple[str, float]]:
        """The live entries as (jti, forget_at) pairs, soonest first (for persisting)."""
        with self._lock:
            if now is not None:
                self._purge(now)
            return sorted(((j, t) for j, t in self._until.items()), key=lambda e: (e[1], e[0]))

    def import_(self, entries: Iterable[tuple[str, float]], now: float) -> int:
        """Remember persisted entries (skipping expired ones); returns how many were added."""
        added = 0
        with self._lock:
            self._purge(now)
            for jti, until in entries:
                until = float(until)
                if not isinstance(jti, str) or until <= now:
                    continue
                old = self._until.get(jti)
                if old is not None:
                    if until > old:
                        self._until[jti] = until
                        heapq.heappush(self._heap, (until, jti))
                    continue
                self._insert(jti, until)
                added += 1
        return added


def load(path: Path, cache: ReplayCache, now: float) -> int:
    """Remember the persisted, still-live token ids; how many. A missing or bad file is empty."""
    try:
        entries = json.loads(path.read_text())
        return cache.import_(((str(j), float(t)) for j, t in entries), now)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, TypeError) as exc:
        log.warning("token replay cache %s unreadable (%s); starting empty", path, exc)
        return 0


def save(path: Path, entries: list[tuple[str, float]]) -> None:
    """Write atomically (blocking: call it in a thread)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, separators=(",", ":")))
    os.replace(tmp, path)
