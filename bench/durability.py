"""Durability benchmarks: snapshots vs tick p99, journal size, kill -9 recovery, replay speed, PostgreSQL.

    python -m bench.durability [--json] [--journal-minutes M] [--players N] [--skip-pg]

Rows (see issue 4, "Benchmarks"):
- snapshot: startales with ~100k entities, journal on, ticks in a loop; tick p50/p99 with a snapshot
  every 600 ticks (10 s at 60 Hz) vs the journal alone; the on-tick cost of `Journal.snapshot()`
  (serialization + enqueue) and the writer thread's time to compress and commit a snapshot.
- journal: bytes per player-minute for startales with N players (default 100) at bot-like rates
  (one input per player every 3 ticks = 20 Hz, thrust, occasional harvest/build/stop).
- recovery: a subprocess generates `--journal-minutes` of journal (default 60 = 216,000 ticks) with
  10 s snapshots at max speed, keeps ticking, and is SIGKILLed; then `open_campaign` is timed.
- replay: `run_replay(verify=True)` of that whole journal from the genesis: ticks/s and × real time.
- pg: `PgWriteBehind` ledger rows/s into 127.0.0.1:5432 (db `test`, user postgres), if reachable.

`--json` prints one object; the results always go to bench/results/durability.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from engine.campaign import Campaign
from engine.journal import Journal, pack_snapshot
from engine.recovery import open_campaign
from engine.tools.replay import run_replay
from persistence.campaign_store import DB_FILENAME
from sim.entities import SLOT_MASK

RESULTS = Path(__file__).resolve().parent / "results" / "durability.json"
TICK_RATE = 60
INPUT_EVERY = 3  # one input per player every 3 ticks (bots send at 20 Hz)
HARVEST, BUILD, STOP = 1, 2, 3


# ------------------------------------------------------------------------------------ bot-like load
class BotLoad:
    """Vectorized stand-in for startales' bot brain (StartalesBrain), driving a Campaign headlessly.

    Each player flies towards a target planet (thrust clipped to the unit disc), harvests when close,
    builds now and then, and moves on after a while. Inputs go through `Campaign.submit` in batch order,
    like the live server files them.
    """

    def __init__(self, campaign: Campaign, players: int, seed: int = 7) -> None:
        self.c = campaign
        self.rng = np.random.default_rng(seed)
        self.eids = np.array([campaign.join(f"bot{i}", f"acct{i}")[0] for i in range(players)], dtype=np.int64)
        self.slots = self.eids & SLOT_MASK
        self.seq = np.zeros(players, dtype=np.int64)
        game = campaign.game
        self.n_planets = int(game.cfg.get("planets", 0))
        self.target = self.rng.integers(0, max(1, self.n_planets), players)
        self.at_target = np.zeros(players, dtype=np.int64)
        self.phase = np.arange(players) % INPUT_EVERY

    def submit(self, tick: int) -> int:
        c = self.c
        a = c.world.arrays
        who = np.flatnonzero(self.phase == tick % INPUT_EVERY)
        if who.size == 0:
            return 0
        slots = self.slots[who]
        px, py = a["x"][:], a["y"][:]
        tgt = self.target[who]
        dx = px[tgt].astype(np.float64) - px[slots]
        dy = py[tgt].astype(np.float64) - py[slots]
        dist = np.hypot(dx, dy)
        scale = np.minimum(1.0, dist / 200.0) / np.maximum(dist, 1e-6)
        tx, ty = dx * scale - a["vx"][slots] * 0.02, dy * scale - a["vy"][slots] * 0.02
        m = np.hypot(tx, ty)
        big = m > 0.999
        tx[big] *= 0.999 / m[big]
        ty[big] *= 0.999 / m[big]
        near = dist < 30.0
        action = np.zeros(who.size, dtype=np.int64)
        self.at_target[who] = np.where(near, self.at_target[who] + 1, 0)
        r = self.rng.random(who.size)
        action[near & (self.at_target[who] == 1)] = HARVEST
        action[near & (self.at_target[who] > 1) & (r < 0.05)] = BUILD
        leave = near & (self.at_target[who] > 200)  # ~10 s at a planet at 20 Hz
        action[leave] = STOP
        if leave.any():
            self.target[who[leave]] = self.rng.integers(0, max(1, self.n_planets), int(leave.sum()))
            self.at_target[who[leave]] = 0
        tx[near], ty[near] = 0.0, 0.0
        self.seq[who] += 1
        seq, eids = self.seq, self.eids
        for k, i in enumerate(who.tolist()):
            c.submit(int(eids[i]), int(seq[i]), tick, (float(tx[k]), float(ty[k]), int(action[k])))
        return int(who.size)


def _pct(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples), q)), 3) if samples else 0.0


# ------------------------------------------------------------------------- snapshot vs tick p99
def bench_snapshot(entities: int, players: int, ticks: int, every: int) -> dict[str, Any]:
    """Tick cost (step + journal record [+ snapshot]) with and without 10 s snapshots."""
    cfg = {"drones": max(0, entities - 48 - players), "max_players": players}
    out: dict[str, Any] = {"entities": entities, "players": players, "ticks": ticks, "snapshot_every": every}
    for mode in ("journal_only", "journal_snapshots"):
        with tempfile.TemporaryDirectory(prefix="arb-snap-") as tmp:
            campaign, store, _ = open_campaign(tmp, "snap", "startales", 42, cfg)
            journal = Journal(campaign, store, snapshot_every=every if mode == "journal_snapshots" else 1 << 40)
            load = BotLoad(campaign, players)
            snap_ms: list[float] = []
            orig = journal.snapshot

            def timed_snapshot(orig: Any = orig, snap_ms: list[float] = snap_ms) -> bool:
                t0 = time.perf_counter()
                ok = bool(orig())
                snap_ms.append((time.perf_counter() - t0) * 1e3)
                return ok

            journal.snapshot = timed_snapshot  # type: ignore[method-assign]
            for _ in range(30):  # warm the kernels
                load.submit(campaign.tick_count)
                campaign.tick()
            samples: list[float] = []
            for _ in range(ticks):
                load.submit(campaign.tick_count)
                t0 = time.perf_counter()
                campaign.tick()
                samples.append((time.perf_counter() - t0) * 1e3)
            assert store.flush(60)
            row = {"tick_p50_ms": _pct(samples, 50), "tick_p99_ms": _pct(samples, 99),
                   "tick_max_ms": round(max(samples), 3)}  # fmt: skip
            if mode == "journal_snapshots":
                row["snapshots"] = journal.snapshots_taken
                row["dropped_snapshots"] = store.dropped_snapshots
                row["snapshot_on_tick_ms_p50"] = _pct(snap_ms, 50)
                row["snapshot_on_tick_ms_max"] = round(max(snap_ms), 3) if snap_ms else 0.0
                # Writer-thread time for one snapshot (zlib level 1 + commit), measured alone.
                w = campaign.world
                raw = pack_snapshot(w, campaign.accounts)
                row["snapshot_raw_mb"] = round(len(raw) / 1e6, 2)
                writer: list[float] = []
                for _ in range(3):
                    load.submit(campaign.tick_count)
                    campaign.tick()
                    assert store.flush(60)
                    t0 = time.perf_counter()
                    journal.snapshot()  # timed_snapshot: on-tick part goes to snap_ms
                    on_tick = snap_ms[-1] / 1e3
                    assert store.flush(60)
                    writer.append((time.perf_counter() - t0 - on_tick) * 1e3)
                row["snapshot_writer_ms"] = _pct(writer, 50)
                con = sqlite3.connect(store.path)
                (size,) = con.execute("SELECT LENGTH(blob) FROM snapshots ORDER BY tick DESC LIMIT 1").fetchone()
                con.close()
                row["snapshot_compressed_mb"] = round(size / 1e6, 2)
            out[mode] = row
            store.close(30)
    return out


# ------------------------------------------------------- the 1 h campaign: generate, kill -9, recover
def _child(data_dir: str, players: int, ticks: int) -> int:
    """Generate `ticks` of journal at max speed, say "ready", keep ticking until killed."""
    campaign, store, _ = open_campaign(data_dir, "hour", "startales", 42, {})
    Journal(campaign, store, snapshot_every=600, hash_every=60)
    load = BotLoad(campaign, players)
    t0 = time.perf_counter()
    ready = False
    while True:
        t = campaign.tick_count
        load.submit(t)
        campaign.tick()
        if not ready and campaign.tick_count >= ticks:
            ready = True
            gen = time.perf_counter() - t0
            print(json.dumps({"ready": campaign.tick_count, "gen_s": round(gen, 2)}), flush=True)
        if ready and campaign.tick_count % 60 == 0:
            # After "ready", tick at about real time so the kill lands at a random point of a live tick loop.
            time.sleep(1 / TICK_RATE)
        if campaign.tick_count >= ticks + 60 * TICK_RATE:
            return 0


def bench_hour(players: int, minutes: float, keep: str | None) -> dict[str, Any]:
    ticks = int(minutes * 60 * TICK_RATE)
    tmp = keep or tempfile.mkdtemp(prefix="arb-hour-")
    data_dir = Path(tmp)
    db = data_dir / "hour" / DB_FILENAME
    out: dict[str, Any] = {"players": players, "journal_minutes": minutes, "journal_ticks": ticks}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.durability", "--_child", str(data_dir), str(players), str(ticks)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("journal generator died")
    info = json.loads(line)
    out["generate_s"] = info["gen_s"]
    out["generate_ticks_per_s"] = round(info["ready"] / info["gen_s"], 1)
    time.sleep(0.5 + np.random.default_rng().random() * 2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out["killed"] = "SIGKILL"

    t0 = time.perf_counter()
    _, store, rep = open_campaign(data_dir, "hour", "startales", 42, {})
    out["recovery_s"] = round(time.perf_counter() - t0, 4)
    out["recovered_tick"] = rep.resumed_tick
    out["recovery_snapshot_tick"] = rep.snapshot_tick
    out["recovery_replayed_ticks"] = rep.replayed_ticks
    out["recovery_hashes_checked"] = rep.hashes_checked
    out["recovery_truncated"] = rep.truncated
    store.close(30)

    # Journal size: the journal table's share of the file, after a checkpoint.
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n_ticks, rec_bytes = con.execute("SELECT COUNT(*), SUM(LENGTH(data)) FROM journal").fetchone()
    n_inputs = (rec_bytes - 11 * n_ticks) / 28
    snap_bytes = con.execute("SELECT COALESCE(SUM(LENGTH(blob)), 0) FROM snapshots").fetchone()[0]
    con.close()
    file_bytes = db.stat().st_size
    player_min = players * n_ticks / TICK_RATE / 60
    out["file_mb"] = round(file_bytes / 1e6, 2)
    out["journal_record_mb"] = round(rec_bytes / 1e6, 2)
    out["inputs_per_tick"] = round(n_inputs / n_ticks, 2)
    out["journal_bytes_per_player_min"] = round((file_bytes - snap_bytes) / player_min, 1)
    out["journal_record_bytes_per_player_min"] = round(rec_bytes / player_min, 1)

    rep2 = run_replay(str(data_dir), verify=True)
    out["replay"] = {k: rep2[k] for k in ("ticks", "seconds", "ticks_per_s", "speedup", "hashes_verified", "ok")}
    if keep is None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------- PostgreSQL write-behind
PG_DSN = os.environ.get("ARBITER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def bench_pg(rows: int = 100_000, dsn: str = PG_DSN) -> dict[str, Any]:
    """Ledger rows/s through `persistence.pg.PgWriteBehind` into a throwaway schema (dropped after)."""
    try:
        import asyncpg

        from persistence.pg_rows import LedgerTxn
        from persistence.pg_writer import PgWriteBehind
    except ImportError as exc:  # PgWriteBehind not there yet: fill in here when it lands
        return {"pg_rows_per_s": None, "note": f"persistence.pg.PgWriteBehind unavailable: {exc}"}

    async def run() -> dict[str, Any]:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(dsn, timeout=5)
        try:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
            w = PgWriteBehind(dsn, schema=schema, max_buffer=200_000, batch_size=2000)
            await w.start()
            # Warm up: migrations, pool, accounts.
            for i in range(100):
                w.record_transaction(LedgerTxn(f"warm:{i}", f"acct{i}", "bench", 0, "harvest", 0, 5, 5))
            assert await w.flush(60)
            t0 = time.perf_counter()
            for k in range(rows):
                tick = k // 100 + 1
                acct = f"acct{k % 100}"
                w.record_transaction(LedgerTxn(f"t:{k}", acct, "bench", tick, "harvest", k & 1, 5, 5 * tick))
                if k % 5000 == 4999:
                    await asyncio.sleep(0)  # the tick loop yields every tick; let the writer run
            ok = await w.flush(300)
            dt = time.perf_counter() - t0
            stats = {"rows": rows, "seconds": round(dt, 3), "pg_rows_per_s": round(rows / dt, 1), "flushed": ok,
                     "written": w.written - 100, "batches": w.batches, "overflowed": w.overflowed}  # fmt: skip
            await w.stop(10)
            n = await admin.fetchval(f'SELECT COUNT(*) FROM "{schema}".transactions')
            stats["rows_in_table"] = int(n) - 100
            return stats
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await admin.close()

    try:
        return asyncio.run(run())
    except (TimeoutError, OSError) as exc:
        return {"pg_rows_per_s": None, "note": f"PostgreSQL unreachable at {dsn}: {exc}"}


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        return _child(argv[1], int(argv[2]), int(argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--journal-minutes", type=float, default=60.0, help="journal length for recovery/replay")
    ap.add_argument("--players", type=int, default=100)
    ap.add_argument("--entities", type=int, default=100_000, help="world size for the snapshot row")
    ap.add_argument("--snapshot-ticks", type=int, default=3600, help="timed ticks per snapshot mode")
    ap.add_argument("--pg-rows", type=int, default=100_000)
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--keep", default=None, help="generate the long journal in this dir and keep it")
    args = ap.parse_args(argv)

    snap = bench_snapshot(args.entities, args.players, args.snapshot_ticks, 600)
    hour = bench_hour(args.players, args.journal_minutes, args.keep)
    pg = {"pg_rows_per_s": None, "note": "skipped"} if args.skip_pg else bench_pg(args.pg_rows)
    with_snap, without = snap["journal_snapshots"], snap["journal_only"]
    result: dict[str, Any] = {
        "snapshot_tick_p99_ms": with_snap["tick_p99_ms"],
        "snapshot_tick_p99_ms_without": without["tick_p99_ms"],
        "journal_bytes_per_player_min": hour["journal_bytes_per_player_min"],
        "recovery_s": hour["recovery_s"],
        "replay_ticks_per_s": hour["replay"]["ticks_per_s"],
        "replay_speedup": hour["replay"]["speedup"],
        "pg_rows_per_s": pg.get("pg_rows_per_s"),
        "snapshot": snap,
        "hour": hour,
        "pg": pg,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
        return 0
    h = hour
    rows = [
        ("snapshot: entities / players", f"{snap['entities']} / {snap['players']}"),
        ("tick p50 / p99 / max, journal only (ms)",
         f"{without['tick_p50_ms']} / {without['tick_p99_ms']} / {without['tick_max_ms']}"),
        ("tick p50 / p99 / max, + snapshot every 10 s (ms)",
         f"{with_snap['tick_p50_ms']} / {with_snap['tick_p99_ms']} / {with_snap['tick_max_ms']}"),
        ("snapshot on tick: serialize+enqueue p50 / max (ms)",
         f"{with_snap['snapshot_on_tick_ms_p50']} / {with_snap['snapshot_on_tick_ms_max']}"),
        ("snapshot writer thread: zlib+commit (ms)", f"{with_snap['snapshot_writer_ms']}"),
        ("snapshot size raw / compressed (MB)",
         f"{with_snap['snapshot_raw_mb']} / {with_snap['snapshot_compressed_mb']}"),
        ("journal: players, inputs/tick", f"{h['players']}, {h['inputs_per_tick']}"),
        ("journal bytes / player-minute (file, excl. snapshots)", f"{h['journal_bytes_per_player_min']}"),
        ("journal record bytes / player-minute", f"{h['journal_record_bytes_per_player_min']}"),
        ("journal length (ticks / minutes)", f"{h['journal_ticks']} / {h['journal_minutes']}"),
        ("generation (s, ticks/s)", f"{h['generate_s']}, {h['generate_ticks_per_s']}"),
        ("recovery after SIGKILL (s)", f"{h['recovery_s']}"),
        ("  from snapshot tick, replayed ticks, hashes", f"{h['recovery_snapshot_tick']}, "
         f"{h['recovery_replayed_ticks']}, {h['recovery_hashes_checked']}"),
        ("replay --verify from genesis (ticks/s)", f"{h['replay']['ticks_per_s']}"),
        ("replay speed-up (x real time)", f"{h['replay']['speedup']}"),
        ("pg write-behind (rows/s)", f"{pg.get('pg_rows_per_s')} {pg.get('note', '')}".strip()),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
