"""The background writer every store shares: a FIFO that the tick (or the loop) appends to without
waiting, and one daemon thread that hands the queued items, in order and in batches, to the store's
own `write(batch)` (its transaction, its retries).

    w = BatchWriter("store-writer", write, capacity=4096, batch=1024)
    w.put(item)            # False when `capacity` items are already waiting: the caller decides
    w.flush(timeout)       # True once everything put before the call was handed to `write`
    w.close(timeout)       # flush, stop the thread, join it

`write` returns False to stop the thread for good (e.g. a store giving up at close); the items of
that batch count as handled, so a flush never waits for what will never be written. The thread is a
daemon: a forgotten close() must not hang interpreter exit (what was committed is on disk).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("arbiter.writer")


class BatchWriter(Generic[T]):
    def __init__(self, name: str, write: Callable[[list[T]], bool], *, capacity: int = 0, batch: int = 1024) -> None:
        self._write = write
        self._capacity = capacity  # 0: unbounded
        self._batch = max(1, batch)
        self._items: deque[T] = deque()
        self._cv = threading.Condition()
        self._put = 0  # items put so far
        self._done = 0  # items handed to `write` and returned from it
        self._inflight = 0
        self._stopping = False
        self.stopped = False  # the thread has exited
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> bool:
        """Append one item; False (nothing appended) when full or closing. Never blocks."""
        return self.put_many((item,)) == 1

    def put_many(self, items: Iterable[T]) -> int:
        """Append items in order until full; returns how many were appended."""
        n = 0
        with self._cv:
            if self._stopping:
                return 0
            for item in items:
                if self._capacity and len(self._items) + self._inflight >= self._capacity:
                    break
                self._items.append(item)
                n += 1
            if n:
                self._put += n
                self._cv.notify()
        return n

    @property
    def pending(self) -> int:
        """Items put and not yet written (queued or in the batch being written)."""
        with self._cv:
            return len(self._items) + self._inflight

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything put before this call went through `write`; False on timeout."""
        with self._cv:
            target = self._put
            return self._cv.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, then stop and join the thread; False if the flush timed out."""
        flushed = self.flush(timeout)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)
        return flushed

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: bool(self._items) or self._stopping)
                    if not self._items:
                        return
                    n = min(len(self._items), self._batch)
                    batch = [self._items.popleft() for _ in range(n)]
                    self._inflight = n
                try:
                    ok = self._write(batch)
                except Exception:  # the store's bug: logged, the batch counts as handled, the thread lives
                    log.exception("%s: write failed", self._thread.name)
                    ok = True
                with self._cv:
                    self._inflight = 0
                    self._done += n
                    if not ok:  # the store gave up: whatever is left will never be written
                        self._done += len(self._items)
                        self._items.clear()
                        self._stopping = True
                    self._cv.notify_all()
                if not ok:
                    return
        finally:
            with self._cv:
                self.stopped = True
                self._cv.notify_all()
