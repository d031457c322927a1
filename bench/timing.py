"""Wall-time figures of behaviours the tests check without a clock (tests must not assert wall
times: a loaded 2-core machine would fail them for nothing).

    python -m bench.timing [--json]

Rows (each one process, in-process servers on free ports; the machine is shared, so say how busy):

- slow_disk: a campaign whose disk takes 0.25 s per commit — tick rate and tick p99 with one player
  (tests/test_durability.py checks the tick runs ahead of the commits);
- stalled_readers: 5 honest clients and 5 that stop reading — the honest clients' snapshot rate and
  the tick rate (tests/test_slow_readers.py checks every honest client got every snapshot sent);
- store_append: 200 journal appends while the first commit sleeps 0.3 s — total and worst append;
- fairplay_append: 2000 audit appends while SQLite is locked by another connection — total, worst,
  and how long the event loop stalled;
- pg_enqueue / pg_rows_per_s: the write-behind's enqueue cost with no server, and its throughput
  against the PostgreSQL at ARBITER_PG_DSN or 127.0.0.1:5432 (skipped when none answers);
- tcp_proxy: the test proxy's one-way delay beyond its configured maximum (latency + jitter).

Writes bench/results/timing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from netcode.client import ArbiterClient
from tests.serverutil import running_server, url, wait_for

RESULTS = Path(__file__).resolve().parent / "results" / "timing.json"


async def slow_disk(seconds: float = 3.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(game="wander", game_config={"npcs": 100}, data_dir=tmp,
                                  store_commit_delay=0.25) as server:  # fmt: skip
            c = await ArbiterClient.connect(url(server), "p")
            loop = asyncio.get_running_loop()
            t0, tick0 = loop.time(), server.campaign.tick_count
            while loop.time() - t0 < seconds:
                c.send_input(0.5, 0.0)
                await asyncio.sleep(0.05)
            hz = (server.campaign.tick_count - tick0) / (loop.time() - t0)
            p99 = server.stats.tick_dur.percentiles_ms()["p99"]
            await c.close()
    return {"tick_hz": round(hz, 2), "tick_p99_ms": round(p99, 3)}


async def stalled_readers(seconds: float = 3.0) -> dict[str, Any]:
    async with running_server(game="wander", game_config={"npcs": 1000}, slow_strikes=10, write_limit=32 * 1024,
                              replication="full") as server:  # fmt: skip
        honest = [await ArbiterClient.connect(url(server), f"h{i}") for i in range(5)]
        slow = [await ArbiterClient.connect(url(server), f"s{i}", rcvbuf=4096) for i in range(5)]
        for c in slow:
            assert c.conn is not None and c.conn.transport is not None
            c.conn.transport.pause_reading()
        loop = asyncio.get_running_loop()
        t0, tick0, counts0 = loop.time(), server.campaign.tick_count, [c.snapshots for c in honest]
        await wait_for(lambda: server.stats.slow_disconnects >= len(slow), timeout=20)
        await asyncio.sleep(seconds)
        el = loop.time() - t0
        rates = [(c.snapshots - n0) / el for c, n0 in zip(honest, counts0, strict=True)]
        hz = (server.campaign.tick_count - tick0) / el
        for c in honest:
            await c.close()
    return {"honest_snapshots_per_s_min": round(min(rates), 2), "tick_hz": round(hz, 2)}


def store_append() -> dict[str, Any]:
    from tests.test_store_campaign import blob
    from tests.worlds import open_store

    with tempfile.TemporaryDirectory() as tmp:
        s = open_store(tmp, "slow", commit_delay=0.3)
        t0, worst = time.perf_counter(), 0.0
        for t in range(1, 201):
            a = time.perf_counter()
            s.append_journal(t, blob(t))
            worst = max(worst, time.perf_counter() - a)
        total = time.perf_counter() - t0
        s.flush(10)
        s.close()
    return {"appends": 200, "total_ms": round(total * 1e3, 3), "worst_us": round(worst * 1e6, 1)}


async def fairplay_append(n: int = 2000) -> dict[str, Any]:
    from persistence.fairplay_store import SqliteFairplayStore
    from tests.test_fairplay_store import _entry

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fairplay.sqlite"
        store = SqliteFairplayStore(path)
        store.append_audit(_entry(-1))
        await store.flush(5)
        lock = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
        await asyncio.to_thread(lock.execute, "BEGIN IMMEDIATE")
        try:
            t0, worst = time.perf_counter(), 0.0
            for i in range(n):
                a = time.perf_counter()
                store.append_audit(_entry(i))
                worst = max(worst, time.perf_counter() - a)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            total = time.perf_counter() - t0
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = time.perf_counter() - t - 0.01
        finally:
            await asyncio.to_thread(lock.execute, "ROLLBACK")
            lock.close()
        await store.flush(10)
        await store.close(2.0)
    return {"appends": n, "total_ms": round(total * 1e3, 3), "worst_ms": round(worst * 1e3, 3),
            "loop_stall_ms": round(lag * 1e3, 3)}  # fmt: skip


async def pg_figures() -> dict[str, Any]:
    from persistence.pg_writer import PgWriteBehind
    from tests.test_pg_store import _txn, measure_rows_per_s

    w = PgWriteBehind("postgresql://nobody@127.0.0.1:1/none", max_buffer=200_000)
    txns = [_txn(i) for i in range(50_000)]
    t0 = time.perf_counter()
    for t in txns:
        w.record_transaction(t)
    out: dict[str, Any] = {"pg_enqueue_us": round((time.perf_counter() - t0) / len(txns) * 1e6, 3)}
    await w.stop(0.1)
    dsn = os.environ.get("ARBITER_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(dsn), 3)
        schema = f"bench_timing_{os.getpid()}"
        try:
            r = await measure_rows_per_s(dsn, schema, rows=50_000)
            out["pg_rows_per_s"] = round(r["rows_per_s"], 1)
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    except (OSError, TimeoutError, ImportError) as exc:
        out["pg_rows_per_s"] = f"skipped: {type(exc).__name__}"
    return out


async def tcp_proxy() -> dict[str, Any]:
    from tests.test_tcp_proxy import StampServer, proxied, stream_messages

    latency, jitter = 0.15, 0.05
    server = StampServer()
    async with proxied(server, latency=latency, jitter=jitter, seed=1) as proxy:
        down, _ = await stream_messages(proxy, count=400, gap=0.004)
    delays = np.asarray(server.up_delays + down)
    return {"messages": len(delays), "min_ms": round(float(delays.min()) * 1e3, 2),
            "p99_ms": round(float(np.percentile(delays, 99)) * 1e3, 2),
            "beyond_max_ms": round(max(0.0, float(delays.max()) - latency - jitter) * 1e3, 2)}  # fmt: skip


async def run() -> dict[str, Any]:
    return {
        "slow_disk": await slow_disk(),
        "stalled_readers": await stalled_readers(),
        "store_append": store_append(),
        "fairplay_append": await fairplay_append(),
        "pg": await pg_figures(),
        "tcp_proxy": await tcp_proxy(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import uvloop

    out = uvloop.run(run())
    if args.json:
        print(json.dumps(out))
    else:
        for name, row in out.items():
            print(f"{name:>16}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
