"""CampaignStore: group-committed journal and snapshots, recovery reads, tail repair."""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from persistence.campaign_reader import JournalEntry, format_hash
from persistence.campaign_store import CampaignLockedError, CampaignStore
from persistence.journal_codec import TickRecord, campaign_format_meta, decode_tick, encode_tick
from tests.worlds import STARTALES_LAYOUT, open_store
from tests.worlds import startales_inputs as make_inputs


def record(tick: int) -> TickRecord:
    """A deterministic, non-trivial record per tick."""
    rng = np.random.default_rng(tick)
    n = int(rng.integers(0, 6))
    inputs = make_inputs(n)
    inputs["eid"] = rng.integers(1, 1000, n)
    inputs["seq"] = np.arange(n) + tick
    inputs["client_tick"] = max(tick - 2, 0)
    inputs["dx"] = rng.uniform(-1, 1, n)
    inputs["dy"] = rng.uniform(-1, 1, n)
    inputs["action"] = rng.integers(0, 3, n)
    inputs["arg"] = rng.integers(-5, 5, n)
    joins = [(int(tick) << 4, f"plåyer-{tick}-✓")] if tick % 7 == 0 else []
    leaves = [int(tick) << 4] if tick % 11 == 0 else []
    return TickRecord(tick, joins, leaves, inputs)


def blob(tick: int) -> bytes:
    r = record(tick)
    return encode_tick(r.tick, r.joins, r.leaves, r.inputs)


def raw_db(store: CampaignStore) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CampaignStore]:
    s = open_store(tmp_path, "camp-1")
    yield s
    s.close()


def fill(store: CampaignStore, first: int, last: int, hash_every: int = 0) -> None:
    for t in range(first, last + 1):
        h = t * 0x9E3779B97F4A7C15 % 2**64 if hash_every and t % hash_every == 0 else None
        assert store.append_journal(t, blob(t), h)
    assert store.flush(10)


def test_layout_and_pragmas(tmp_path: Path) -> None:
    s = open_store(tmp_path, "c")
    try:
        assert s.path == tmp_path / "c" / "campaign.sqlite"
        assert s.pragmas() == {"journal_mode": "wal", "synchronous": 1}
        tables = {r[0] for r in raw_db(s).execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "snapshots", "journal", "kv"} <= tables
    finally:
        s.close()
    full = open_store(tmp_path, "d", durability="full")
    try:
        assert full.pragmas()["synchronous"] == 2
    finally:
        full.close()
    with pytest.raises(ValueError):
        open_store(tmp_path, "../escape")
    with pytest.raises(ValueError):
        open_store(tmp_path, "x", durability="off")


def test_journal_round_trip_in_tick_order(store: CampaignStore) -> None:
    fill(store, 1, 300, hash_every=10)
    reader = store.iter_journal(0)
    entries = list(reader)
    assert reader.problem is None
    assert [e.tick for e in entries] == list(range(1, 301))
    for e in entries:
        assert isinstance(e, JournalEntry)
        assert e.record == record(e.tick)
        expected = format_hash(e.tick * 0x9E3779B97F4A7C15 % 2**64) if e.tick % 10 == 0 else None
        assert e.state_hash == expected
    assert [e.tick for e in store.iter_journal(100, 105)] == [101, 102, 103, 104, 105]
    assert store.journal_bounds() == (1, 300)
    assert store.committed_tick == 300
    assert store.queued == 300
    assert store.committed_batches >= 1
    assert store.bytes_written == sum(len(blob(t)) for t in range(1, 301))


def test_ticks_must_be_consecutive(store: CampaignStore) -> None:
    assert store.append_journal(5, blob(5))
    with pytest.raises(ValueError):
        store.append_journal(7, blob(7))
    with pytest.raises(ValueError):
        store.append_journal(5, blob(5))
    assert store.append_journal(6, blob(6))


def test_append_never_waits_on_disk_and_commit_is_observable(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    s = open_store(tmp_path, "slow", commit_delay=0.3)

    def on_commit(tick: int) -> None:
        # Called after COMMIT: a fresh connection must already see the tick.
        on_disk = sqlite3.connect(s.path).execute("SELECT MAX(tick) FROM journal").fetchone()[0]
        seen.append((tick, on_disk))

    s.on_commit = on_commit
    try:
        for t in range(1, 201):
            assert s.append_journal(t, blob(t))
        # Every append returned while the first commit still sleeps: appending never waits on it
        # (the cost of an append: bench.timing).
        assert s.committed_tick < 200
        assert s.flush(10)
        assert s.committed_tick == 200
        assert seen and seen[-1][0] == 200
        assert all(on_disk >= tick for tick, on_disk in seen)
        assert [t for t, _ in seen] == sorted(t for t, _ in seen)
        # Group commit: 200 records in far fewer transactions than records.
        assert s.committed_batches <= 5
        assert s.max_queue_depth >= 100
    finally:
        s.close()


def test_committed_tick_lags_until_commit(tmp_path: Path) -> None:
    gate = threading.Event()
    s = open_store(tmp_path, "lag", commit_delay=0.2)
    s.on_commit = lambda tick: gate.set()
    try:
        assert s.committed_tick == -1
        assert s.append_journal(1, blob(1))
        assert s.committed_tick == -1
        assert not gate.is_set()
        assert gate.wait(5)
        assert s.committed_tick == 1
    finally:
        s.close()


def test_backpressure_returns_false_and_loses_nothing(tmp_path: Path) -> None:
    s = open_store(tmp_path, "bp", queue_size=8, commit_delay=0.2)
    try:
        refused_at = None
        for t in range(1, 100):
            if not s.append_journal(t, blob(t)):
                refused_at = t
                break
        assert refused_at is not None
        assert s.backpressure_refusals == 1
        # The refused tick is still the one expected: the caller retries it.
        deadline = time.monotonic() + 10
        t = refused_at
        while t < 40:
            if s.append_journal(t, blob(t)):
                t += 1
            else:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert s.flush(10)
        assert [e.tick for e in s.iter_journal(0)] == list(range(1, 40))
    finally:
        s.close()


def test_on_commit_exception_does_not_stop_writer(tmp_path: Path) -> None:
    def boom(tick: int) -> None:
        raise RuntimeError("caller bug")

    s = open_store(tmp_path, "boom", on_commit=boom)
    try:
        fill(s, 1, 20)
        assert s.committed_tick == 20
    finally:
        s.close()


def test_snapshot_round_trip_and_compression(store: CampaignStore) -> None:
    fill(store, 1, 10)
    raw = np.arange(100_000, dtype=np.int64).tobytes()
    assert store.put_snapshot(10, 0xDEADBEEF, raw)
    assert store.flush(10)
    snap = store.latest_snapshot()
    assert snap is not None
    assert snap == (10, "00000000deadbeef", raw)
    stored = raw_db(store).execute("SELECT length(blob), crc FROM snapshots WHERE tick=10").fetchone()
    assert stored[0] < len(raw) // 2
    assert stored[1] == zlib.crc32(raw)
    assert store.committed_snapshot_tick == 10


def test_snapshot_must_follow_its_journal_record(store: CampaignStore) -> None:
    fill(store, 1, 5)
    with pytest.raises(ValueError):
        store.put_snapshot(6, 1, b"x")
    assert store.put_snapshot(5, 1, b"x")


def test_latest_snapshot_respects_max_tick(store: CampaignStore) -> None:
    fill(store, 1, 30)
    for t in (0, 10, 20, 30):
        assert store.put_snapshot(t, t, f"state-{t}".encode())
        assert store.flush(10)
    assert store.latest_snapshot(25) == (20, format_hash(20), b"state-20")
    assert store.latest_snapshot(9) == (0, format_hash(0), b"state-0")
    assert store.latest_snapshot(-1) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "crc", "text"])
def test_corrupt_newest_snapshot_falls_back(store: CampaignStore, damage: str) -> None:
    fill(store, 1, 20)
    for t in (10, 20):
        assert store.put_snapshot(t, t, (f"world-{t}" * 1000).encode())
        assert store.flush(10)
    db = raw_db(store)
    (b,) = db.execute("SELECT blob FROM snapshots WHERE tick=20").fetchone()
    if damage == "flip":
        bad = bytearray(b)
        bad[len(bad) // 2] ^= 0xFF
        db.execute("UPDATE snapshots SET blob=? WHERE tick=20", (bytes(bad),))
    elif damage == "truncate":
        db.execute("UPDATE snapshots SET blob=? WHERE tick=20", (b[: len(b) // 2],))
    elif damage == "crc":
        db.execute("UPDATE snapshots SET crc=crc+1 WHERE tick=20")
    else:
        db.execute("UPDATE snapshots SET blob='garbage' WHERE tick=20")
    db.close()
    snap = store.latest_snapshot()
    assert snap is not None
    assert snap.tick == 10
    assert snap.data == b"world-10" * 1000


def test_snapshot_retention_keeps_newest_and_tick_zero(tmp_path: Path) -> None:
    s = open_store(tmp_path, "ret", snapshot_retention=3)
    try:
        assert s.put_snapshot(0, 0, b"genesis")
        for t in range(1, 61):
            assert s.append_journal(t, blob(t))
            if t % 10 == 0:
                assert s.put_snapshot(t, t, b"s%d" % t)
                assert s.flush(10)
        assert s.snapshot_ticks() == [0, 40, 50, 60]
    finally:
        s.close()


def test_pending_snapshots_are_bounded(tmp_path: Path) -> None:
    s = open_store(tmp_path, "pend", commit_delay=0.3, max_pending_snapshots=2)
    try:
        results = [s.put_snapshot(t, t, b"x" * 1000) for t in range(5)]
        # The first may already be in the writer's hands; at most 2 wait in the queue.
        assert results.count(True) <= 3
        assert s.dropped_snapshots == results.count(False) >= 2
        assert s.flush(10)
        assert s.put_snapshot(9, 9, b"y")
    finally:
        s.close()


def tear_last_row(store: CampaignStore, how: str, tick: int) -> None:
    db = raw_db(store)
    if how == "truncated":
        db.execute("UPDATE journal SET data=? WHERE tick=?", (blob(tick)[:-7], tick))
    elif how == "garbage":
        db.execute("UPDATE journal SET data=? WHERE tick=?", (b"\x00\xffgarbage" * 5, tick))
    elif how == "wrong_tick":
        db.execute("UPDATE journal SET data=? WHERE tick=?", (blob(tick + 1), tick))
    elif how == "gap":
        db.execute("DELETE FROM journal WHERE tick=?", (tick - 3,))
    db.close()


@pytest.mark.parametrize("how", ["truncated", "garbage", "wrong_tick"])
def test_torn_tail_is_detected_reported_and_truncated(store: CampaignStore, how: str) -> None:
    fill(store, 1, 50)
    tear_last_row(store, how, 50)

    reader = store.iter_journal(0)
    assert [e.tick for e in reader] == list(range(1, 50))
    assert reader.problem is not None and reader.problem.tick == 50
    assert reader.last_tick == 49

    report = store.repair_tail()
    assert not report.ok
    assert report.first_bad_tick == 50
    assert report.removed_rows == 1
    assert report.removed_last_tick == 50
    assert report.last_good_tick == 49
    assert report.scanned == 49
    assert report.reason

    assert store.journal_bounds() == (1, 49)
    assert store.committed_tick == 49
    again = store.repair_tail()
    assert again.ok and again.removed_rows == 0 and again.last_good_tick == 49
    # Appending resumes right after the last good tick.
    assert store.append_journal(50, blob(50))
    assert store.flush(10)
    assert [e.record for e in store.iter_journal(0)] == [record(t) for t in range(1, 51)]


def test_corruption_inside_tail_removes_everything_after_it(store: CampaignStore) -> None:
    fill(store, 1, 50)
    tear_last_row(store, "garbage", 45)
    report = store.repair_tail(after_tick=20)
    assert report.first_bad_tick == 45
    assert report.removed_rows == 6
    assert report.removed_last_tick == 50
    assert report.scanned == 24
    assert store.journal_bounds() == (1, 44)


def test_gap_is_detected(store: CampaignStore) -> None:
    fill(store, 1, 50)
    tear_last_row(store, "gap", 50)  # deletes tick 47
    reader = store.iter_journal(40)
    assert [e.tick for e in reader] == [41, 42, 43, 44, 45, 46]
    assert reader.problem is not None and reader.problem.tick == 47
    report = store.repair_tail()
    assert report.first_bad_tick == 48 and report.removed_rows == 3
    assert store.journal_bounds() == (1, 46)


def test_iter_journal_reports_missing_start(store: CampaignStore) -> None:
    fill(store, 1, 10)
    store.truncate_journal(0)
    assert store.journal_bounds() is None
    fill(store, 20, 25)
    reader = store.iter_journal(10)
    assert list(reader) == []
    assert reader.problem is not None and reader.problem.tick == 11


def test_truncate_journal_after_divergence(store: CampaignStore) -> None:
    fill(store, 1, 30)
    assert store.truncate_journal(25) == 5
    assert store.committed_tick == 25
    with pytest.raises(ValueError):
        store.append_journal(31, blob(31))
    assert store.append_journal(26, blob(26))
    assert store.flush(10)


def test_reopen_keeps_meta_and_journal(tmp_path: Path) -> None:
    s = open_store(tmp_path, "re")
    s.set_meta({"game": "startales", "seed": 42, "config": {"planets": 12}, "engine_version": "0.1.0"})
    s.set_meta({"created": "2024-01-01T00:00:00Z"})
    fill(s, 1, 12)
    assert s.put_snapshot(12, 7, b"snap")
    assert s.close()
    with pytest.raises(RuntimeError):
        s.append_journal(13, blob(13))

    s2 = open_store(tmp_path, "re")
    try:
        assert s2.get_meta() == {
            "game": "startales",
            "seed": "42",
            "config": '{"planets": 12}',
            "engine_version": "0.1.0",
            "created": "2024-01-01T00:00:00Z",
            **campaign_format_meta(STARTALES_LAYOUT),
        }
        assert s2.committed_tick == 12
        assert s2.committed_snapshot_tick == 12
        assert s2.latest_snapshot() == (12, format_hash(7), b"snap")
        with pytest.raises(ValueError):
            s2.append_journal(12, blob(12))
        assert s2.append_journal(13, blob(13))
        assert s2.flush(10)
        assert [e.tick for e in s2.iter_journal(0)] == list(range(1, 14))
    finally:
        s2.close()


def test_second_open_is_refused(store: CampaignStore, tmp_path: Path) -> None:
    with pytest.raises(CampaignLockedError):
        open_store(tmp_path, "camp-1")


def test_format_hash() -> None:
    assert format_hash(0) == "0000000000000000"
    assert format_hash(2**64 - 1) == "ffffffffffffffff"
    assert format_hash(-1) == "ffffffffffffffff"
    assert format_hash(np.uint64(2**63)) == "8000000000000000"
    assert format_hash("ABCDEF0123456789") == "abcdef0123456789"
    for bad in (2**64, "xyz", "abc"):
        with pytest.raises(ValueError):
            format_hash(bad)


def test_decoded_records_from_db_match_blobs(store: CampaignStore) -> None:
    fill(store, 1, 5)
    for tick, data in raw_db(store).execute("SELECT tick, data FROM journal ORDER BY tick"):
        assert data == blob(tick)
        assert decode_tick(data, STARTALES_LAYOUT) == record(tick)
