"""One writer thread for many stores (a host's): order per store, turns between stores, flush and
close per store, and the thread ends with its last store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from persistence.batch_writer import BatchWriter, WriterThread
from persistence.campaign_store import CampaignStore


def _threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


def test_writers_share_one_thread_in_turns_and_keep_their_order() -> None:
    shared = WriterThread("shared-test")
    seen: list[tuple[str, list[int]]] = []
    gate = threading.Event()

    def writer(name: str) -> BatchWriter[int]:
        def write(batch: list[int]) -> bool:
            gate.wait(5)
            seen.append((name, batch))
            return True

        return BatchWriter(name, write, batch=10, thread=shared)

    a, b = writer("a"), writer("b")
    assert _threads("shared-test") == 1 and _threads("a") == 0
    assert a.put_many(range(35)) == 35  # a long backlog first ...
    assert b.put_many(range(3)) == 3  # ... does not keep b waiting for all of it
    gate.set()
    assert a.flush(5) and b.flush(5)
    order = [name for name, _ in seen]
    assert order.index("b") <= 2, order  # b's batch comes within a's first turns
    assert [x for n, batch in seen if n == "a" for x in batch] == list(range(35))
    assert [x for n, batch in seen if n == "b" for x in batch] == [0, 1, 2]
    assert max(len(batch) for _, batch in seen) <= 10
    a.close(5)
    assert a.stopped and not a.put(1) and b.put(3) and b.flush(5)  # b goes on
    b.close(5)
    assert b.stopped
    deadline = time.monotonic() + 5
    while (shared.alive or _threads("shared-test")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not shared.alive and _threads("shared-test") == 0  # the last store closed: the thread is gone


def test_a_writer_that_gives_up_stops_alone() -> None:
    shared = WriterThread("shared-giveup")
    got: list[int] = []

    def keep(batch: list[int]) -> bool:
        got.extend(batch)
        return True

    a: BatchWriter[int] = BatchWriter("a", lambda batch: False, thread=shared)
    b: BatchWriter[int] = BatchWriter("b", keep, thread=shared)
    a.put(1)
    assert a.flush(5)
    a.put(2)
    assert a.flush(5)  # what it will never write does not hang a flush
    assert b.put_many([1, 2]) == 2 and b.flush(5) and got == [1, 2]
    a.close(5)
    b.close(5)


def test_campaign_stores_on_one_thread_commit_and_reopen(tmp_path: Path) -> None:
    shared = WriterThread("store-writer-test")
    stores = [CampaignStore.open(tmp_path, f"c{i}", writer_thread=shared) for i in range(5)]
    assert _threads("store-writer-test") == 1
    for i, st in enumerate(stores):
        for tick in range(1, 51):
            assert st.append_journal(tick, bytes([i, tick]))
    for st in stores:
        assert st.flush(10) and st.committed_tick == 50
        assert st.close(10)
    for i in range(5):
        with CampaignStore.open(tmp_path, f"c{i}") as st:
            assert [e for e in st._db.execute("SELECT COUNT(*), MAX(tick) FROM journal")] == [(50, 50)]
