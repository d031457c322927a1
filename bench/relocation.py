"""Relocation benchmark: RPO (acknowledged input lost with the machine) and time to play again elsewhere.

    python -m bench.relocation [--trials 3] [--clients 10] [--play 3] [--ack disk pg] [--json]

Per trial: `arbiter serve` A (startales, --pg, a data dir) with N SDK clients playing at 20 inputs/s
(reconnect on), killed with SIGKILL at a random moment and its data dir deleted; `arbiter serve` B on
another data dir restores the campaign from PostgreSQL and the clients rejoin by themselves.

- RPO: for each client, the newest input it saw acknowledged by A minus the newest input B's copy has
  applied for its ship (B's acknowledgement once it serves the campaign), in inputs and in seconds
  (÷ the input rate); the max over clients and trials is the measured RPO.
- Relocation time: from the SIGKILL to every client holding a snapshot from B (B's process start,
  restore, recovery and the clients' rejoin included).

Needs PostgreSQL at 127.0.0.1:5432 (user postgres); each run uses a fresh database. Results go to
bench/results/relocation.json. The machine is shared and noisy: quote the figures as such.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from engine.tools.launcher import ServerProcess, start_server
from netcode.client import ArbiterClient, FixedLocator, Reconnect

RESULTS = Path(__file__).resolve().parent / "results" / "relocation.json"
PG = "postgresql://postgres@127.0.0.1:5432/"
INPUT_RATE = 20.0


async def _trial(tmp: Path, db: str, ack: str, clients_n: int, play_s: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    campaign = f"reloc{seed}"
    common = ["--game", "startales", "--seed", str(seed), "--campaign", campaign, "--fairplay", "observe",
              "--pg", PG + db, "--ack-after", ack]  # fmt: skip
    a = start_server([*common, "--data-dir", str(tmp / "a")])
    b: ServerProcess | None = None
    where = FixedLocator(a.url)
    rc = Reconnect(where, timeout=120.0)
    clients = [await ArbiterClient.connect(a.url, f"p{i}", reconnect=rc) for i in range(clients_n)]
    loop = asyncio.get_running_loop()
    try:
        end = loop.time() + play_s + rng.uniform(0.0, 1.0)  # kill at a random phase of the shipping interval
        while loop.time() < end:
            for c in clients:
                c.send_input(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6))
            await asyncio.sleep(1.0 / INPUT_RATE)
        acked = {c.name: c.session.last_ack_seq for c in clients}
        sent = {c.name: c.session.seq for c in clients}
        t_kill = loop.time()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        shutil.rmtree(tmp / "a")
        b = start_server([*common, "--data-dir", str(tmp / "b")])
        t_ready = loop.time()
        where.url = b.url
        for c in clients:
            await c.wait_rejoined(120.0)
            await c.next_snapshot(10.0)
        t_back = loop.time()
        # Nobody sends after the kill, so B's acknowledgements can only show what its copy holds. With
        # --ack-after pg they start at 0 until B has claimed the campaign: read them for a second.
        for c in clients:
            c.session.last_ack_seq = 0
        await asyncio.sleep(1.0)
        restored = {c.name: c.session.last_ack_seq for c in clients}
    finally:
        for c in clients:
            await c.close()
        a.kill()
        if b is not None:
            b.stop()
    lost = {n: max(0, acked[n] - restored[n]) for n in acked}
    return {
        "ack": ack,
        "acked_inputs": sum(acked.values()),
        "sent_inputs": sum(sent.values()),
        "lost_acked_inputs": sum(lost.values()),
        "rpo_inputs_max": max(lost.values()),
        "rpo_s_max": round(max(lost.values()) / INPUT_RATE, 3),
        "unacked_at_kill_max": max(sent[n] - acked[n] for n in sent),
        "server_b_ready_s": round(t_ready - t_kill, 3),
        "relocation_s": round(t_back - t_kill, 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for ack in args.ack:
        for t in range(args.trials):
            db = f"arbiter_reloc_{secrets.token_hex(4)}"
            admin = await asyncpg.connect(PG + "postgres")
            await admin.execute(f'CREATE DATABASE "{db}"')
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    row = await _trial(Path(tmp), db, ack, args.clients, args.play, 100 + t)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                await admin.close()
            rows.append(row)
            if not args.json:
                print(json.dumps(row))
    summary = {}
    for ack in args.ack:
        mine = [r for r in rows if r["ack"] == ack]
        summary[ack] = {
            "trials": len(mine),
            "rpo_s_max": max(r["rpo_s_max"] for r in mine),
            "lost_acked_inputs_total": sum(r["lost_acked_inputs"] for r in mine),
            "relocation_s_max": max(r["relocation_s"] for r in mine),
            "relocation_s_mean": round(sum(r["relocation_s"] for r in mine) / len(mine), 3),
        }
    return {"bench": "relocation", "clients": args.clients, "input_rate": INPUT_RATE, "play_s": args.play,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": summary, "trials": rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--play", type=float, default=3.0, help="seconds of play before the kill (+ 0..1 s)")
    p.add_argument("--ack", nargs="+", default=["disk", "pg"], choices=("disk", "pg"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = asyncio.run(main_async(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out if args.json else out["summary"], indent=None if args.json else 2))


if __name__ == "__main__":
    main()
