"""Storage of bans and the fair-play audit log: `SqliteFairplayStore` (file and in-memory) and
`PgFairplayStore`, through the same tests.

PostgreSQL: one database per session (`arbiter_fp_<hex>`, created through the `postgres` database and
dropped at the end), one fresh schema per test, as in tests/test_pg_store.py. Without a reachable
server the PostgreSQL cases skip, unless ARBITER_REQUIRE_SERVICES=1, then they fail.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from persistence.fairplay_records import AuditEntry, BanRecord, FairplayStore, StoreClosedError, normalize_ip_range
from persistence.fairplay_store import SqliteFairplayStore
from persistence.pg_fairplay import PgFairplayStore
from persistence.pg_migrations import MIGRATIONS, current_version, migrate
from persistence.pg_rows import PgUnavailableError
from persistence.pg_writer import PgWriteBehind
from tests.pgutil import PG_USER
from tests.pgutil import dsn as _dsn

T0 = 1_700_000_000.0  # whole and half seconds: exact through PostgreSQL's microsecond timestamps


@dataclass
class Backend:
    """One store location. `open()` returns a new store object on the same data each time (a restart);
    `stall(store)` holds the audit table's write lock from another connection (a stuck disk or server)."""

    kind: str
    open: Callable[..., FairplayStore]
    stall: Callable[[FairplayStore], AbstractAsyncContextManager[None]] | None = None
    dsn: str = ""
    schema: str = ""
    path: Path | None = None
    opened: list[FairplayStore] = field(default_factory=list)


@asynccontextmanager
async def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if kind == "memory":
        b = Backend(kind, lambda **kw: SqliteFairplayStore(None, **kw))
    elif kind == "sqlite":
        path = tmp_path / "c1" / "fairplay.sqlite"

        @asynccontextmanager
        async def stall_sqlite(store: FairplayStore) -> AsyncIterator[None]:
            await store.flush(5)
            conn = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
            await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
            try:
                yield
            finally:
                await asyncio.to_thread(conn.execute, "ROLLBACK")
                conn.close()

        b = Backend(kind, lambda **kw: SqliteFairplayStore(path, **kw), stall_sqlite, path=path)
    else:
        database = request.getfixturevalue("pg_database")
        dsn, schema = _dsn(database), f"fp_{secrets.token_hex(6)}"

        @asynccontextmanager
        async def stall_pg(store: FairplayStore) -> AsyncIterator[None]:
            await store.list_bans(T0)  # the table exists (migrated) before it is locked
            await store.flush(5)
            conn = await asyncpg.connect(dsn)
            tx = conn.transaction()
            await tx.start()
            # EXCLUSIVE blocks INSERT, not SELECT.
            await conn.execute(f'LOCK TABLE "{schema}".audit_log IN EXCLUSIVE MODE')
            try:
                yield
            finally:
                await tx.rollback()
                await conn.close()

        def open_pg(**kw: Any) -> FairplayStore:
            kw.setdefault("backoff_base", 0.02)
            kw.setdefault("backoff_cap", 0.2)
            return PgFairplayStore(dsn, schema=schema, **kw)

        b = Backend(kind, open_pg, stall_pg, dsn=dsn, schema=schema)

    opener = b.open

    def tracked(**kw: Any) -> FairplayStore:
        store = opener(**kw)
        b.opened.append(store)
        return store

    b.open = tracked
    try:
        yield b
    finally:
        for store in b.opened:
            await store.close(2.0)
        if kind == "pg":
            conn = await asyncpg.connect(b.dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{b.schema}" CASCADE')
            finally:
                await conn.close()


@pytest.fixture(params=["memory", "sqlite", "pg"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with _backend(request.param, request, tmp_path) as b:
        yield b


@pytest.fixture(params=["sqlite", "pg"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Backends that persist across a restart and can be stalled."""
    async with _backend(request.param, request, tmp_path) as b:
        yield b


def _entry(i: int, **kw: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "event_id": f"c1:{i}:warn",
        "ts": T0 + i,
        "campaign": "c1",
        "account": f"acct{i % 7}",
        "action": "warn",
        "evidence": {"violations": [{"tick": i, "kind": "speed", "value": 9.5}], "from_tick": i, "to_tick": i + 1},
    }
    fields.update(kw)
    return AuditEntry(**fields)


# ---------------------------------------------------------------------------------------- records


def test_ban_record_active_applies_to_and_json() -> None:
    ban = BanRecord(1, "bob", "203.0.113.0/24", "c1", "bot farm", "ops", T0, until=T0 + 60)
    assert ban.active(T0) and ban.active(T0 + 59.9) and not ban.active(T0 + 60)
    lifted = BanRecord(2, "eve", None, None, "x", "ops", T0, lifted_at=T0 + 10, lifted_by="ops")
    assert lifted.active(T0 + 5) and not lifted.active(T0 + 10)

    def hit(b: BanRecord, account: str | None, ip: str | None, campaign: str | None = "c1", now: float = T0) -> bool:
        return b.applies_to(account=account, ip=ip, campaign=campaign, now=now)

    assert hit(ban, "bob", None)
    assert hit(ban, "alice", "203.0.113.77")
    assert hit(ban, "alice", "::ffff:203.0.113.77")  # an IPv4 peer seen through a dual-stack socket
    assert not hit(ban, "alice", "203.0.114.1")
    assert not hit(ban, "alice", "not an ip")
    assert not hit(ban, "bob", None, campaign="c2")  # the ban is for c1 only
    assert not hit(ban, "bob", None, now=T0 + 61)  # expired
    assert hit(lifted, "eve", None, campaign="anything", now=T0 + 1)  # campaign None = all campaigns
    assert ban.to_json() == {
        "ban_id": 1,
        "account": "bob",
        "ip_range": "203.0.113.0/24",
        "campaign": "c1",
        "reason": "bot farm",
        "created_by": "ops",
        "created_at": T0,
        "until": T0 + 60,
        "lifted_at": None,
        "lifted_by": None,
    }
    assert normalize_ip_range(" 192.0.2.7 ") == "192.0.2.7/32"
    assert normalize_ip_range("2001:DB8::/32") == "2001:db8::/32"
    assert _entry(3).to_json()["evidence"]["from_tick"] == 3
    assert len({AuditEntry(action="warn").event_id for _ in range(100)}) == 100


# ---------------------------------------------------------------------------------------- bans


async def test_bans_add_list_expiry_lift(backend: Backend) -> None:
    store = backend.open()
    assert isinstance(store, FairplayStore)
    assert await store.list_bans(T0) == []
    perm = await store.add_ban(account="bob", campaign="c1", reason="speedhack", created_by="anticheat", created_at=T0)
    temp = await store.add_ban(account="carol", reason="cooldown", created_by="ops", until=T0 + 60, created_at=T0)
    rng = await store.add_ban(ip_range="203.0.113.0/24", reason="bot farm", created_by="ops", created_at=T0 + 0.5)
    assert perm.ban_id < temp.ban_id < rng.ban_id
    assert (perm.account, perm.ip_range, perm.campaign, perm.until, perm.lifted_at) == ("bob", None, "c1", None, None)
    assert (rng.account, rng.ip_range, rng.created_at) == (None, "203.0.113.0/24", T0 + 0.5)

    assert await store.list_bans(T0 + 1) == [perm, temp, rng]
    assert await store.load_active_bans(T0 + 60) == [perm, rng]  # carol's ban expired
    assert await store.list_bans(T0 + 60, include_expired=True) == [perm, temp, rng]

    assert await store.remove_bans(account="bob", by="ops", now=T0 + 100) == 1
    assert await store.remove_bans(account="bob", by="ops", now=T0 + 101) == 0  # already lifted
    assert await store.remove_bans(account="carol", by="ops", now=T0 + 100) == 0  # expired: nothing to lift
    assert await store.remove_bans(ip_range="203.0.113.0/24", by="ops2", now=T0 + 100) == 1
    assert await store.list_bans(T0 + 200) == []
    history = await store.list_bans(T0 + 200, include_expired=True)
    assert [(b.ban_id, b.lifted_at, b.lifted_by) for b in history] == [
        (perm.ban_id, T0 + 100, "ops"),
        (temp.ban_id, None, None),
        (rng.ban_id, T0 + 100, "ops2"),
    ]
    # The rows are history, not deleted: asked about a time before the lift, the bans were in force.
    assert [b.ban_id for b in await store.list_bans(T0 + 50)] == [perm.ban_id, temp.ban_id, rng.ban_id]

    both = await store.add_ban(account="dave", ip_range="198.51.100.9", reason="x", created_by="ops", created_at=T0)
    single = await store.add_ban(account="erin", reason="y", created_by="ops", created_at=T0)
    assert await store.remove_bans(ban_id=single.ban_id, by="ops", now=T0 + 300) == 1
    assert await store.remove_bans(ip_range="198.51.100.9/32", by="ops", now=T0 + 300) == 1  # same range as given
    assert await store.list_bans(T0 + 301) == []
    assert both.ip_range == "198.51.100.9/32"


async def test_ban_validation(backend: Backend) -> None:
    store = backend.open()
    for bad in ["10.0.0.0/33", "not-an-ip", "10.0.0.1/8", "", "300.1.1.1", "10.0.0.0/8/8", "2001:db8::/129"]:
        with pytest.raises(ValueError, match="invalid IP range"):
            await store.add_ban(ip_range=bad, reason="r", created_by="ops")
        with pytest.raises(ValueError):
            await store.remove_bans(ip_range=bad, by="ops")
    with pytest.raises(ValueError, match="account, an IP range"):
        await store.add_ban(reason="r", created_by="ops")
    with pytest.raises(ValueError, match="until"):
        await store.add_ban(account="a", reason="r", created_by="ops", created_at=T0, until=T0)
    with pytest.raises(ValueError, match="until"):
        await store.add_ban(account="a", reason="r", created_by="ops", until=math.nan)
    with pytest.raises(ValueError, match="reason"):
        await store.add_ban(account="a", reason="", created_by="ops")
    with pytest.raises(ValueError, match="which bans"):
        await store.remove_bans(by="ops")
    with pytest.raises(ValueError, match="by"):
        await store.remove_bans(account="a", by="")
    assert await store.list_bans(0.0, include_expired=True) == []  # nothing half-written
    v6 = await store.add_ban(ip_range="2001:db8::/32", reason="r", created_by="ops", created_at=T0)
    assert v6.ip_range == "2001:db8::/32"
    assert v6.applies_to(account=None, ip="2001:db8::1", campaign="c1", now=T0 + 1)


# ---------------------------------------------------------------------------------------- audit


async def test_audit_newest_first_filters_and_exactly_once(backend: Backend) -> None:
    store = backend.open()
    e0 = _entry(0, ts=T0 + 1, account="alice")
    e1 = _entry(1, ts=T0 + 2, account="bob", action="kick")
    e2 = _entry(2, ts=T0 + 3, account="alice", campaign="c2", action="ban")
    e3 = _entry(3, ts=T0 + 3, account="alice", action="admin_kick", evidence={"by": "ops"})  # same ts: later row first
    e4 = AuditEntry(event_id="old", ts=T0 + 0.5, action="unban")  # appended last, oldest by time
    for e in (e0, e1, e2, e3, e4):
        store.append_audit(e)
    store.append_audit(_entry(1, action="replayed"))  # the same event_id again (a journal replay)
    assert await store.flush(5)

    everything = await store.read_audit()
    assert everything == [e3, e2, e1, e0, e4]
    assert [e.to_json() for e in everything] == [e.to_json() for e in (e3, e2, e1, e0, e4)]
    assert await store.read_audit(limit=2) == [e3, e2]
    assert await store.read_audit(account="alice") == [e3, e2, e0]
    assert await store.read_audit(since_ts=T0 + 2) == [e3, e2, e1]
    assert await store.read_audit(campaign="c1") == [e3, e1, e0]
    assert await store.read_audit(account="alice", since_ts=T0 + 2, campaign="c1") == [e3]
    assert await store.read_audit(account="nobody") == []
    stats = store.stats()
    assert (stats["queued"], stats["written"], stats["duplicates"], stats["audit_dropped"]) == (6, 6, 1, 0)
    assert stats["pending"] == 0


async def test_audit_evidence_is_snapshotted_and_made_json_safe(backend: Backend) -> None:
    store = backend.open()
    rows = [{"tick": 7, "dx": np.float32(1.5), "eid": np.int64(3)}]
    evidence: dict[str, Any] = {"violations": rows, "speed": math.nan, "limit": math.inf, "name": "a\x00b"}
    evidence["ticks"] = np.arange(3)
    store.append_audit(AuditEntry(event_id="e", ts=T0, account="bob", action="kick", evidence=evidence))
    rows.append({"tick": 8})  # changed after the append: must not reach the log
    store.append_audit(AuditEntry(action=""))  # unusable: counted, never raised
    store.append_audit("not an entry")  # type: ignore[arg-type]
    assert await store.flush(5)
    [got] = await store.read_audit()
    name = "a\ufffdb" if backend.kind == "pg" else "a\x00b"  # PostgreSQL cannot store NUL
    assert got.evidence == {
        "violations": [{"tick": 7, "dx": 1.5, "eid": 3}],
        "speed": "NaN",
        "limit": "Infinity",
        "name": name,
        "ticks": [0, 1, 2],
    }
    assert store.stats()["audit_dropped"] == 2


async def test_append_never_blocks_while_storage_stalls(durable: Backend) -> None:
    assert durable.stall is not None
    store = durable.open()
    n = 2000
    async with durable.stall(store):
        for i in range(n):
            store.append_audit(_entry(i))  # returns although nothing can be written (its cost: bench.timing)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the writer try (and block) in between
        assert not await store.flush(timeout=0.3)  # nothing can commit while the lock is held
        assert store.stats()["written"] == 0
        assert store.stats()["pending"] == n
    assert await store.flush(timeout=10)
    stats = store.stats()
    assert (stats["queued"], stats["written"], stats["audit_dropped"], stats["pending"]) == (n, n, 0, 0)
    got = await store.read_audit(limit=n + 10)
    assert [e.event_id for e in got] == [f"c1:{i}:warn" for i in reversed(range(n))]


async def test_queue_full_is_counted_not_silent(durable: Backend, caplog: pytest.LogCaptureFixture) -> None:
    assert durable.stall is not None
    store = durable.open(queue_size=20)
    caplog.set_level(logging.ERROR)
    async with durable.stall(store):
        for i in range(27):
            store.append_audit(_entry(i))
        stats = store.stats()
    assert await store.flush(timeout=10)
    got = {e.event_id for e in await store.read_audit(limit=100)}
    if durable.kind == "sqlite":
        # Refused at the door: the 7 newest, never entries already queued.
        assert (stats["queued"], stats["audit_dropped"]) == (20, 7)
        assert got == {f"c1:{i}:warn" for i in range(20)}
        assert isinstance(store, SqliteFairplayStore)
        assert [row[0] for row, _ in store.dropped_entries] == [f"c1:{i}:warn" for i in range(20, 27)]
        assert any("queue full" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    else:
        # The write-behind hands what does not fit to its overflow sink and writes it later: no loss.
        assert (stats["queued"], stats["audit_dropped"], stats["overflowed"]) == (27, 0, 7)
        assert got == {f"c1:{i}:warn" for i in range(27)}
        assert store.stats()["overflow_pending"] == 0
        assert any("overflow sink" in r.getMessage() for r in caplog.records)


async def test_concurrent_appends_from_many_coroutines(backend: Backend) -> None:
    store = backend.open()
    writers, each = 50, 100

    async def player(k: int) -> None:
        for i in range(each):
            store.append_audit(AuditEntry(event_id=f"{k}:{i}", ts=T0 + i, account=f"p{k}", action="warn"))
            if i % 3 == k % 3:
                await asyncio.sleep(0)

    async def reader() -> int:
        # Reads interleaved with the appends must neither fail nor block the writers.
        seen = 0
        for _ in range(5):
            seen = max(seen, len(await store.read_audit(limit=10_000)))
            await asyncio.sleep(0.001)
        return seen

    *_, seen = await asyncio.gather(*(player(k) for k in range(writers)), reader())
    assert seen is not None and seen <= writers * each
    assert await store.flush(10)
    got = await store.read_audit(limit=10_000)
    assert sorted(e.event_id for e in got) == sorted(f"{k}:{i}" for k in range(writers) for i in range(each))
    assert len(await store.read_audit(limit=10_000, account="p7")) == each
    stats = store.stats()
    assert (stats["queued"], stats["written"], stats["audit_dropped"]) == (writers * each, writers * each, 0)


# ---------------------------------------------------------------------------------------- lifecycle


async def test_survives_a_restart(durable: Backend) -> None:
    store = durable.open()
    kept = await store.add_ban(account="bob", reason="speedhack", created_by="anticheat", created_at=T0)
    gone = await store.add_ban(ip_range="10.0.0.0/8", reason="farm", created_by="ops", created_at=T0, until=T0 + 9)
    lifted = await store.add_ban(account="eve", reason="appeal", created_by="ops", created_at=T0)
    assert await store.remove_bans(account="eve", by="ops", now=T0 + 5) == 1
    entries = [_entry(i) for i in range(10)]
    for e in entries:
        store.append_audit(e)
    await store.close()  # no flush: close writes what is queued
    assert store.stats()["written"] == 10

    again = durable.open()
    assert await again.load_active_bans(T0 + 10) == [kept]
    history = await again.list_bans(T0 + 10, include_expired=True)
    assert [b.ban_id for b in history] == [kept.ban_id, gone.ban_id, lifted.ban_id]
    assert history[2].lifted_at == T0 + 5
    assert await again.read_audit() == entries[::-1]
    later = await again.add_ban(account="zed", reason="r", created_by="ops", created_at=T0)
    assert later.ban_id > lifted.ban_id  # ids are never reused
    if durable.kind == "sqlite":
        assert durable.path is not None and durable.path.exists()
        conn = sqlite3.connect(durable.path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()


async def test_closed_store_refuses_and_counts(backend: Backend) -> None:
    store = backend.open()
    store.append_audit(_entry(1))
    await store.close()
    await store.close()  # idempotent
    store.append_audit(_entry(2))
    stats = store.stats()
    assert (stats["written"], stats["audit_dropped"]) == (1, 1)
    with pytest.raises(StoreClosedError):
        await store.add_ban(account="a", reason="r", created_by="ops")
    with pytest.raises(StoreClosedError):
        await store.read_audit()


def test_sqlite_open_layout(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteFairplayStore.open(tmp_path, "camp-1")
        assert store.path == tmp_path / "camp-1" / "fairplay.sqlite"
        await store.close()
        memory = SqliteFairplayStore.open(None, "camp-1")
        assert memory.path is None
        await memory.close()
        with pytest.raises(ValueError):
            SqliteFairplayStore.open(tmp_path, "../x")

    asyncio.run(run())
    assert (tmp_path / "camp-1" / "fairplay.sqlite").exists()


# ---------------------------------------------------------------------------------------- PostgreSQL only


async def test_pg_migration_3_upgrades_v2_bans(pg_database: str) -> None:
    dsn, schema = _dsn(pg_database), f"fp_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(dsn)
    store: PgFairplayStore | None = None
    try:
        assert await migrate(conn, schema, migrations=MIGRATIONS[:2]) == [1, 2]
        await conn.execute(
            f'INSERT INTO "{schema}".bans (account_id, reason, created_by, created_at) '
            "VALUES ('bob', 'old ban', 'admin', to_timestamp($1::float8))",
            T0,
        )
        store = PgFairplayStore(dsn, schema=schema)
        [old] = await store.load_active_bans(T0 + 1)  # migrates to the newest version on first use
        assert (old.account, old.ip_range, old.reason, old.created_at) == ("bob", None, "old ban", T0)
        assert old.lifted_at is None
        assert await current_version(conn, schema) == MIGRATIONS[-1].version
        assert await migrate(conn, schema) == []
        insert = f'INSERT INTO "{schema}".bans (account_id, ip_range, reason, created_by) VALUES ($1, $2, $3, $4)'
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, None, None, "no target", "sql")
        with pytest.raises(asyncpg.DataError):
            await conn.execute(insert, None, "10.0.0.0/99", "bad range", "sql")
    finally:
        if store is not None:
            await store.close()
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_pg_shared_writer_and_unreachable_server(pg_database: str) -> None:
    dsn, schema = _dsn(pg_database), f"fp_{secrets.token_hex(6)}"
    writer = PgWriteBehind(dsn, schema=schema)
    await writer.start()
    store = PgFairplayStore(dsn, schema=schema, writer=writer)
    try:
        store.append_audit(_entry(1))
        assert await store.flush(5)
        assert [e.event_id for e in await store.read_audit()] == ["c1:1:warn"]
        await store.close()
        assert store.stats()["shared_writer"] is True
        writer.upsert_account("still-running")  # the owner's writer outlives the store
        assert await writer.flush(5)
    finally:
        await writer.stop(2)
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

    # Nothing listens on port 1: admin calls fail with PgUnavailableError, appends still return at once,
    # and evidence that never reached PostgreSQL is counted when the store closes.
    down = PgFairplayStore(f"postgresql://{PG_USER}@127.0.0.1:1/x", connect_timeout=0.5, backoff_cap=0.1)
    with pytest.raises(PgUnavailableError):
        await down.add_ban(account="a", reason="r", created_by="ops")
    down.append_audit(_entry(2))
    assert down.stats()["pending"] == 1
    await down.close(timeout=0.3)
    stats = down.stats()
    assert (stats["written"], stats["audit_dropped"]) == (0, 1)
    assert isinstance(stats["write_errors"], int) and stats["write_errors"] > 0
