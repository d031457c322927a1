"""PostgreSQL migrations and write-behind, against the real server.

One database per test session (`arbiter_test_<random>`, created through the `postgres` database and
dropped at the end), one fresh schema per test. Without a reachable server the tests skip, unless
ARBITER_REQUIRE_SERVICES=1, then they fail. Server: ARBITER_TEST_PG_HOST / _PORT / _USER
(default 127.0.0.1:5432, postgres, trust auth).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from persistence.pg_migrations import MIGRATIONS, Migration, MigrationError, current_version, migrate
from persistence.pg_rows import LedgerTxn, MemoryOverflow, Progress
from persistence.pg_writer import PgWriteBehind
from tests.pgutil import PG_HOST, PG_PORT, PG_USER
from tests.pgutil import dsn as _dsn
from tests.tcp_proxy import TcpProxy

ALL_VERSIONS = [m.version for m in MIGRATIONS]


@dataclass
class Pg:
    database: str
    schema: str
    conn: asyncpg.Connection

    @property
    def dsn(self) -> str:
        return _dsn(self.database)

    def dsn_via(self, proxy: TcpProxy) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{proxy.port}/{self.database}"

    async def count(self, table: str) -> int:
        return int(await self.conn.fetchval(f'SELECT count(*) FROM "{self.schema}".{table}'))


@pytest.fixture
async def pg(pg_database: str) -> AsyncIterator[Pg]:
    """A fresh (empty, unmigrated) schema in the session database, and a connection to it."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(_dsn(pg_database))
    try:
        yield Pg(pg_database, schema, conn)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def _txn(i: int, *, campaign: str = "c1", account: str | None = None, balance: int | None = None) -> LedgerTxn:
    return LedgerTxn(
        txn_id=f"{campaign}:{i}",
        account_id=account if account is not None else f"acct{i % 50}",
        campaign_id=campaign,
        tick=i // 20,
        kind="harvest",
        resource=i % 3,
        amount=5,
        balance_after=i if balance is None else balance,
    )


def _writer(dsn: str, schema: str, **kwargs: object) -> PgWriteBehind:
    defaults: dict[str, object] = {"backoff_base": 0.02, "backoff_cap": 0.25, "connect_timeout": 2.0}
    defaults.update(kwargs)
    return PgWriteBehind(dsn, schema=schema, **defaults)  # type: ignore[arg-type]


async def _assert_exactly_once(pg: Pg, ids: list[str]) -> None:
    row = await pg.conn.fetchrow(f'SELECT count(*) AS n, count(DISTINCT txn_id) AS d FROM "{pg.schema}".transactions')
    assert row is not None
    assert (row["n"], row["d"]) == (len(ids), len(ids))
    stored = {r["txn_id"] for r in await pg.conn.fetch(f'SELECT txn_id FROM "{pg.schema}".transactions')}
    assert stored == set(ids)


# ---------------------------------------------------------------------------------------- migrations


async def test_migrations_apply_then_are_idempotent(pg: Pg) -> None:
    assert await current_version(pg.conn, pg.schema) == 0
    assert await migrate(pg.conn, pg.schema) == ALL_VERSIONS
    assert await migrate(pg.conn, pg.schema) == []
    assert await current_version(pg.conn, pg.schema) == ALL_VERSIONS[-1]
    tables = {
        r["table_name"]
        for r in await pg.conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", pg.schema
        )
    }
    assert {"schema_migrations", "accounts", "game_progress", "transactions", "bans", "audit_log"} <= tables
    # The advisory lock is released: another session can take it at once.
    assert await pg.conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


async def test_migrations_race_from_two_connections(pg: Pg) -> None:
    other = await asyncpg.connect(pg.dsn)
    pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        results = await asyncio.gather(migrate(pg.conn, pg.schema), migrate(other, pg.schema), migrate(pool, pg.schema))
    finally:
        await other.close()
        await pool.close()
    assert sorted(v for r in results for v in r) == ALL_VERSIONS
    assert sum(1 for r in results if r) == 1
    assert await pg.count("schema_migrations") == len(ALL_VERSIONS)


async def test_changed_migration_is_refused(pg: Pg) -> None:
    await migrate(pg.conn, pg.schema)
    edited = (Migration(1, MIGRATIONS[0].name, MIGRATIONS[0].sql + "\n-- edited"), *MIGRATIONS[1:])
    with pytest.raises(MigrationError):
        await migrate(pg.conn, pg.schema, migrations=edited)
    # A new migration on top applies alone.
    extra = Migration(99, "extra", "CREATE TABLE extra_t (x INT)")
    assert await migrate(pg.conn, pg.schema, migrations=(*MIGRATIONS, extra)) == [99]


async def test_check_constraint_refuses_negative_balance(pg: Pg) -> None:
    await migrate(pg.conn, pg.schema)
    await pg.conn.execute(f"INSERT INTO \"{pg.schema}\".accounts (account_id) VALUES ('a')")
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.conn.execute(
            f'INSERT INTO "{pg.schema}".transactions '
            "(txn_id, account_id, campaign_id, tick, kind, resource, amount, balance_after) "
            "VALUES ('x', 'a', 'c', 1, 'build', 0, -10, -3)"
        )


# ---------------------------------------------------------------------------------------- writer


async def test_ledger_is_idempotent_by_txn_id(pg: Pg) -> None:
    w = _writer(pg.dsn, pg.schema)
    await w.start()
    w.record_transaction(_txn(1))
    w.record_transaction(_txn(1))  # same batch
    w.record_transaction(_txn(2))
    assert await w.flush(5)
    w.record_transaction(_txn(1))  # a later batch (a retry, a replayed journal)
    w.record_transaction(_asdict(_txn(2)))  # a mapping works too
    assert await w.stop(5)
    await _assert_exactly_once(pg, ["c1:1", "c1:2"])
    assert w.written == 5 and w.duplicates == 3 and w.rejected == 0
    # Accounts referenced by the ledger were created.
    assert await pg.count("accounts") == 2


def _asdict(txn: LedgerTxn) -> dict[str, object]:
    return {name: getattr(txn, name) for name in LedgerTxn.__slots__}


async def test_poison_rows_are_set_aside_and_do_not_block_the_queue(pg: Pg, caplog: pytest.LogCaptureFixture) -> None:
    w = _writer(pg.dsn, pg.schema, batch_size=500)
    await w.start()
    ids: list[str] = []
    for i in range(400):
        if i == 123:
            w.record_transaction(_txn(i, balance=-1))  # CHECK (balance_after >= 0)
        elif i == 321:
            w.record_transaction({**_asdict(_txn(i)), "kind": ""})  # CHECK on kind
        else:
            w.record_transaction(_txn(i))
            ids.append(f"c1:{i}")
    w.record_transaction({"txn_id": "junk"})  # missing fields: rejected at enqueue, never queued
    assert await w.flush(10)
    for i in range(400, 500):  # the queue still moves
        w.record_transaction(_txn(i))
        ids.append(f"c1:{i}")
    assert await w.stop(10)
    await _assert_exactly_once(pg, ids)
    assert w.rejected == 3
    assert {row.values[0] for row, _ in list(w.rejected_rows)[1:]} == {"c1:123", "c1:321"}
    assert any("CheckViolation" in why for _, why in w.rejected_rows)
    assert w.retries == 0 and w.written == len(ids)
    assert sum(1 for r in caplog.records if r.levelno == logging.ERROR and "refused" in r.getMessage()) == 3


async def test_bad_python_value_is_rejected_not_retried(pg: Pg) -> None:
    w = _writer(pg.dsn, pg.schema)
    await w.start()
    w.record_transaction(_txn(1))
    w.record_transaction({**_asdict(_txn(2)), "resource": 1 << 20})  # does not fit SMALLINT
    w.record_transaction({**_asdict(_txn(3)), "account_id": 42})  # not text: client-side encoding error
    w.record_transaction(_txn(4))
    assert await w.stop(10)
    await _assert_exactly_once(pg, ["c1:1", "c1:4"])
    assert w.rejected == 2 and w.retries == 0


async def test_progress_upsert_keeps_newest_and_load_round_trip(pg: Pg) -> None:
    w = _writer(pg.dsn, pg.schema)
    await w.start()
    assert await w.load_progress("alice", "c1") is None
    mask = (1 << 63) | (1 << 5) | 1  # high bit set: stored as a negative BIGINT, read back unsigned
    w.upsert_account("alice", "Alice")
    w.upsert_progress(
        Progress("alice", "c1", 100, {"metal": 10, 1: 7}, buildings=2, achievements=mask, last_x=1.5, txn_last=41)
    )
    w.upsert_progress(Progress("alice", "c1", 90, {"metal": 1}))  # older, same batch: coalesced away
    assert await w.flush(5)
    w.upsert_progress(Progress("alice", "c1", 80, {"metal": 2}))  # older, later batch: the upsert keeps 100
    w.upsert_progress({"account_id": "alice", "campaign_id": "c2", "tick": 5, "resources": {}})
    assert await w.flush(5)
    got = await w.load_progress("alice", "c1")
    assert got is not None
    assert (got["tick"], got["resources"], got["buildings"], got["achievements"]) == (
        100,
        {"metal": 10, "1": 7},
        2,
        mask,
    )
    assert (got["last_x"], got["last_y"], got["txn_last"]) == (1.5, None, 41)
    assert await pg.count("game_progress") == 2
    assert await pg.conn.fetchval(f'SELECT display_name FROM "{pg.schema}".accounts') == "Alice"
    # Newer progress still in the buffer wins over the database (a quick leave + rejoin).
    w.upsert_progress(Progress("alice", "c1", 200, {"metal": 99}))
    got = await w.load_progress("alice", "c1")
    assert got is not None and got["tick"] == 200 and got["resources"] == {"metal": 99}
    assert await w.stop(5)
    row = await pg.conn.fetchrow(
        f'SELECT tick, resources FROM "{pg.schema}".game_progress WHERE campaign_id = $1', "c1"
    )
    assert row is not None and row["tick"] == 200


async def test_audit_log_exactly_once(pg: Pg) -> None:
    # Bans moved to persistence/pg_fairplay.py: tests/test_fairplay_store.py covers them.
    w = _writer(pg.dsn, pg.schema)
    await w.start()
    w.append_audit("kick", campaign_id="c1", account_id="bob", evidence={"speed": 9.5}, event_id="c1:77:kick")
    w.append_audit("kick", campaign_id="c1", account_id="bob", evidence={"speed": 9.5}, event_id="c1:77:kick")
    w.append_audit("strike", account_id="bob")
    assert await w.flush(5)
    assert await pg.count("audit_log") == 2
    evidence = await pg.conn.fetchval(f'SELECT evidence::text FROM "{pg.schema}".audit_log WHERE action = $1', "kick")
    assert evidence == '{"speed": 9.5}'
    assert await w.stop(5)


async def test_enqueue_is_cheap_and_never_touches_the_network() -> None:
    # No server at all (port 1): enqueue stays an append.
    w = PgWriteBehind("postgresql://nobody@127.0.0.1:1/none", max_buffer=200_000)
    txns = [_txn(i) for i in range(50_000)]
    for t in txns:
        w.record_transaction(t)  # an append: no connection is ever tried from here (its cost: bench.timing)
    assert w.buffer_depth == 50_000 and not w.connected and w.retries == w.failures == 0
    assert await w.stop(0.1) is False
    assert len(w.drain_overflow()) == 50_000


# ---------------------------------------------------------------------------------------- outages


async def test_outage_mid_stream_every_row_exactly_once(pg: Pg) -> None:
    """20k ledger rows over ~3 s through a proxy that is cut for 2 s mid-stream."""
    await migrate(pg.conn, pg.schema)
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    w = _writer(pg.dsn_via(proxy), pg.schema, batch_size=1000, run_migrations=False)
    await w.start()
    seen_down: list[bool] = []

    async def outage() -> None:
        await asyncio.sleep(0.8)
        await proxy.cut()
        await asyncio.sleep(1.0)
        seen_down.append(not w.connected and w.buffer_depth > 0)
        await asyncio.sleep(1.0)
        await proxy.restore()

    cutter = asyncio.create_task(outage())
    ids: list[str] = []
    try:
        for i in range(20_000):
            w.record_transaction(_txn(i))
            ids.append(f"c1:{i}")
            if i % 200 == 199:  # 100 "ticks" of 200 rows, ~3.5 s
                await asyncio.sleep(0.035)
        await cutter
        assert await w.stop(15)
    finally:
        await proxy.close()
    await _assert_exactly_once(pg, ids)
    assert seen_down == [True]
    assert w.retries > 0 and w.failures > 0
    assert w.written == 20_000 and w.rejected == 0 and w.overflowed == 0
    assert w.queued == 20_000 and w.buffer_depth == 0
    assert proxy.cuts >= 1 and proxy.accepted >= 2  # it really reconnected through the proxy


async def test_buffer_overflow_during_outage_loses_nothing(pg: Pg, caplog: pytest.LogCaptureFixture) -> None:
    """Start during an outage with a 500-row buffer, enqueue 3000 rows: 2500 overflow to the sink,
    an ERROR says so (once, rate-limited), and after restore every row arrives exactly once."""
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    await proxy.cut()
    sink = MemoryOverflow()
    w = _writer(pg.dsn_via(proxy), pg.schema, max_buffer=500, batch_size=200, overflow=sink)
    await w.start()  # also migrates, once the server is reachable
    ids = []
    try:
        for i in range(3000):
            w.record_transaction(_txn(i))
            ids.append(f"c1:{i}")
            if i % 100 == 99:
                await asyncio.sleep(0.01)
        for p in range(10):  # progress coalesces per player but still needs a slot
            w.upsert_progress(Progress(f"acct{p}", "c1", 1, {"metal": p}))
        assert w.overflowed == 2510 and sink.pending() == 2510 and w.buffer_depth == 500
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "buffer full" in r.getMessage()]
        assert len(errors) == 1
        await asyncio.sleep(0.3)
        assert w.written == 0 and w.retries > 0 and not w.connected
        await proxy.restore()
        assert await w.stop(15)
    finally:
        await proxy.close()
    await _assert_exactly_once(pg, ids)
    assert await pg.count("game_progress") == 10
    assert w.unspilled == 2510 and sink.pending() == 0 and w.written == 3010


async def test_stop_during_outage_hands_rows_to_sink_and_a_new_writer_finishes(pg: Pg) -> None:
    await migrate(pg.conn, pg.schema)
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    await proxy.cut()
    w = _writer(pg.dsn_via(proxy), pg.schema, run_migrations=False)
    await w.start()
    for i in range(100):
        w.record_transaction(_txn(i))
    try:
        assert await w.stop(0.5) is False
    finally:
        await proxy.close()
    left = w.drain_overflow()
    assert len(left) == 100 and w.buffer_depth == 0
    # E.g. the campaign SQLite kept them; the next server process takes them back.
    sink = MemoryOverflow()
    sink.spill(left)
    w2 = _writer(pg.dsn, pg.schema, overflow=sink)
    await w2.start()
    assert await w2.stop(5)
    await _assert_exactly_once(pg, [f"c1:{i}" for i in range(100)])


# ---------------------------------------------------------------------------------------- throughput


async def measure_rows_per_s(dsn: str, schema: str, rows: int = 100_000, batch_size: int = 2000) -> dict[str, float]:
    """Enqueue `rows` ledger rows as fast as possible and time until all are committed.
    Also used by bench code (bench/ may import tests/)."""
    w = PgWriteBehind(dsn, schema=schema, max_buffer=rows + 1, batch_size=batch_size)
    await w.start()
    await w.load_progress("warmup", "c")  # connect + migrate before timing
    txns = [_txn(i, campaign="bench") for i in range(rows)]
    t0 = time.perf_counter()
    for t in txns:
        w.record_transaction(t)
    t1 = time.perf_counter()
    ok = await w.flush(120)
    t2 = time.perf_counter()
    await w.stop(5)
    assert ok and w.written == rows
    return {
        "rows": rows,
        "batch_size": batch_size,
        "rows_per_s": rows / (t2 - t0),
        "enqueue_us": (t1 - t0) / rows * 1e6,
        "batches": w.batches,
    }


async def test_write_behind_writes_every_row_in_batches(pg: Pg) -> None:
    result = await measure_rows_per_s(pg.dsn, pg.schema, rows=50_000)  # the rate itself: bench.timing
    assert await pg.count("transactions") == 50_000
    assert result["batches"] <= 50_000 / 2000 * 2  # batched, not row by row
