"""The background writer every store shares: a FIFO that the tick (or the loop) appends to without
waiting, and a daemon thread that hands the queued items, in order and in batches, to the store's
own `write(batch)` (its transaction, its retries).

    w = BatchWriter("store-writer", write, capacity=4096, batch=1024)
    w.put(item)            # False when `capacity` items are already waiting: the caller decides
    w.flush(timeout)       # True once everything put before the call was handed to `write`
    w.close(timeout)       # flush, stop the thread, join it

`write` returns False to stop the writer for good (e.g. a store giving up at close); the items of
that batch count as handled, so a flush never waits for what will never be written. The thread is a
daemon: a forgotten close() must not hang interpreter exit (what was committed is on disk).

A writer has its own thread, or shares a `WriterThread` with other writers (`thread=`): a host
process running a hundred campaigns runs one SQLite writer thread, not two hundred. The shared
thread serves the writers that have items in turn, one batch each, so a campaign with a long
backlog does not hold the others' commits back by more than one batch; with a group-commit window
(`min_interval_s`) each writer is served at most that often.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("arbiter.writer")


class WriterThread:
    """One daemon thread serving many `BatchWriter`s (started with the first, ended with the last).

    `min_interval_s`: a writer is served at most this often (a group-commit window): records that
    arrive meanwhile wait and go in its next batch, so a hundred stores each fed every tick make a
    few commits a second each instead of one per record."""

    def __init__(self, name: str = "store-writer", min_interval_s: float = 0.0) -> None:
        self.name = name
        self.min_interval = min_interval_s
        self.cv = threading.Condition()
        # Writers with items waiting: (not before, order, writer), soonest first.
        self._ready: list[tuple[float, int, BatchWriter[Any]]] = []
        self._order = itertools.count()
        self._members = 0
        self._thread: threading.Thread | None = None
        self.batches = 0

    @property
    def alive(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def attach(self) -> None:
        with self.cv:
            self._members += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def ready(self, writer: BatchWriter[Any]) -> None:
        """`writer` has items (call with `cv` held)."""
        not_before = 0.0 if writer._stopping else writer._last_write + self.min_interval
        ready = self._ready
        # The thread sleeps until the soonest turn: wake it only if this one comes sooner.
        wake = not ready or not_before < ready[0][0]
        heapq.heappush(ready, (not_before, next(self._order), writer))
        if wake:
            self.cv.notify_all()

    def _next(self) -> BatchWriter[Any] | None:
        """(cv held) The next writer whose turn has come; None when the thread should end."""
        ready = self._ready
        while True:
            if not ready:
                if self._members <= 0:
                    return None
                self.cv.wait()
                continue
            wait = ready[0][0] - time.monotonic()
            if wait <= 0:
                return heapq.heappop(ready)[2]
            self.cv.wait(wait)

    def _run(self) -> None:
        cv = self.cv
        while True:
            with cv:
                writer = self._next()
                if writer is None:
                    self._thread = None
                    return
                batch = writer._take()
                writer._last_write = time.monotonic()
            if batch:
                writer._handle(batch)
                self.batches += 1
            with cv:
                writer._turn_done(self)


class BatchWriter(Generic[T]):
    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], bool],
        *,
        capacity: int = 0,
        batch: int = 1024,
        thread: WriterThread | None = None,
    ) -> None:
        self._write = write
        self._name = name
        self._capacity = capacity  # 0: unbounded
        self._batch = max(1, batch)
        self._items: deque[T] = deque()
        self._shared = thread
        self._cv = thread.cv if thread is not None else threading.Condition()
        self._put = 0  # items put so far
        self._done = 0  # items handed to `write` and returned from it
        self._inflight = 0
        self._queued = False  # (shared thread) waiting for its turn
        self.depth = 0  # items waiting or being written, as of the last put
        self._last_write = 0.0  # (shared thread) when its last batch started
        self._stopping = False
        self.stopped = False  # no write of this writer runs or will run
        self._thread: threading.Thread | None = None
        if thread is not None:
            thread.attach()
        else:
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
            self.depth = len(self._items) + self._inflight
            if n:
                self._put += n
                if self._shared is not None:
                    if not self._queued and not self._inflight:
                        self._queued = True
                        self._shared.ready(self)
                else:
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
        """Flush, then stop (and join its own thread); False if the flush timed out."""
        flushed = self.flush(timeout)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            with self._cv:
                if not self._inflight and not self.stopped:
                    self._finish()
        return flushed

    # -- the writing side (own thread, or the shared one) -----------------------------------------
    def _take(self) -> list[T]:
        """The next batch (cv held)."""
        n = min(len(self._items), self._batch)
        batch = [self._items.popleft() for _ in range(n)]
        self._inflight = n
        self._queued = False
        return batch

    def _handle(self, batch: list[T]) -> None:
        """Write one batch (cv not held); a False from `write` stops this writer for good."""
        try:
            ok = self._write(batch)
        except Exception:  # the store's bug: logged, the batch counts as handled, the writer lives
            log.exception("%s: write failed", self._name)
            ok = True
        with self._cv:
            self._inflight = 0
            self._done += len(batch)
            if not ok:  # the store gave up: whatever is left will never be written
                self._done += len(self._items)
                self._items.clear()
                self._stopping = True
            self._cv.notify_all()

    def _turn_done(self, thread: WriterThread) -> None:
        """(shared thread, cv held) Back in line if more is waiting; finished once closed and empty."""
        if self._items and not self._queued:
            self._queued = True
            thread.ready(self)
        elif self._stopping and not self._items and not self.stopped:
            self._finish()

    def _finish(self) -> None:
        """(cv held) This writer is done: off the shared thread, flush waiters released."""
        self.stopped = True
        if self._shared is not None:
            self._shared._members -= 1
            self._shared.cv.notify_all()
        self._cv.notify_all()

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: bool(self._items) or self._stopping)
                    if not self._items:
                        return
                    batch = self._take()
                self._handle(batch)
                with self._cv:
                    if self._stopping and not self._items:
                        return
        finally:
            with self._cv:
                self.stopped = True
                self._cv.notify_all()
