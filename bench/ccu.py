"""CCU ladder: how many clients one server process holds at 60 Hz.

Per level: a fresh `arbiter serve` pinned to CPU 0, `arbiter bots` pinned to CPU 1, wait until every
bot joined, 5 s warm-up, then a 20 s window measured from two /stats samples and the server's CPU
times. A level where the driver could not deliver its load is reported as driver-limited, not as a
server result.

    python -m bench.ccu --game wander --levels 100,200,400,600,800,1000,1200,1500 [--repeat 3] [--json]

Columns: `snapshots_per_client_s` is what the server sent, `delivered_per_client_s` what the bots
received; `cpu0_other` / `cpu1_other` are the busy fractions of the two CPUs that neither the
server nor the driver accounts for (other processes, interrupts): on a shared box a level with a
large one measured the neighbours, not Arbiter. With `--repeat N` each level runs N times and a
median row follows (holds60 then means: held in the majority of the runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from engine.tools.launcher import start_server
from sim.registry import game_names

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_busy() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat (empty where there is none)."""
    out: dict[str, tuple[int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals]
                    out[name] = (sum(v) - v[3] - v[4], sum(v))  # minus idle and iowait
    except OSError:
        pass
    return out


def _other(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]], cpu: str, ours: float) -> float | None:
    if cpu not in a or cpu not in b or b[cpu][1] <= a[cpu][1]:
        return None
    return round((b[cpu][0] - a[cpu][0]) / (b[cpu][1] - a[cpu][1]) - ours, 3)


def run_level(game: str, clients: int, warmup: float, window: float, extra: list[str]) -> dict[str, Any]:
    server = start_server(
        ["--game", game, "--max-players", str(max(clients + 16, 64)), "--data-dir", tempfile.mkdtemp(), *extra], cpu=0
    )
    bots_cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "bots",
        "--url",
        server.url,
        "--count",
        str(clients),
        "--duration",
        str(warmup + window + 3),
        "--json",
    ]
    if subprocess.run(["which", "taskset"], capture_output=True).returncode == 0:
        bots_cmd = ["taskset", "-c", "1", *bots_cmd]
    bots = subprocess.Popen(bots_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60 + clients / 20
        while server.stats()["ccu"] < clients:
            if time.monotonic() > deadline or bots.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(warmup)
        proc = psutil.Process(server.proc.pid)
        driver = psutil.Process(bots.pid)  # taskset execs the driver: same pid
        a, cpu_a, t_a = server.stats(), proc.cpu_times(), time.monotonic()
        drv_a, busy_a = driver.cpu_times(), _cpu_busy()
        time.sleep(window)
        b, cpu_b, t_b = server.stats(), proc.cpu_times(), time.monotonic()
        drv_b, busy_b = driver.cpu_times(), _cpu_busy()
        rss = proc.memory_info().rss / 2**20
        out, err = bots.communicate(timeout=warmup + window + 120)
    finally:
        if bots.poll() is None:
            bots.kill()
        server.stop()
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        report = {"error": err[-2000:]}
    el = t_b - t_a
    ccu = int(b["ccu"])
    sent = b["snapshots_sent"] - a["snapshots_sent"]
    skipped = b["snapshots_skipped"] - a["snapshots_skipped"]
    send_rate = int(b["send_rate"])
    snaps_per_client_s = sent / el / max(ccu, 1)
    delivered = report.get("snapshots_per_bot_s", 0.0) / send_rate if send_rate else 0.0
    inputs_ok = report.get("inputs_per_s", 0.0) >= 0.95 * report.get("inputs_target_per_s", 1e18)
    driver_limited = (not inputs_ok) or report.get("connected", 0) < clients
    server_cores = (cpu_b.user + cpu_b.system - cpu_a.user - cpu_a.system) / el
    driver_cores = (drv_b.user + drv_b.system - drv_a.user - drv_a.system) / el
    row = {
        "game": game,
        "clients": clients,
        "ccu": ccu,
        "server_cpu_cores": round(server_cores, 3),
        "server_sys_cores": round((cpu_b.system - cpu_a.system) / el, 3),
        "rss_mb": round(rss, 1),
        "tick_hz": round((b["ticks"] - a["ticks"]) / el, 2),
        "tick_p50_ms": b["tick_p50_ms"],
        "tick_p99_ms": b["tick_p99_ms"],
        "send_p99_ms": b["send_p99_ms"],
        "overruns": b["overruns"] - a["overruns"],
        "bytes_out_per_client_s": round((b["bytes_out"] - a["bytes_out"]) / el / max(ccu, 1), 1),
        "inputs_per_s": round(
            (b["inputs"] - a["inputs"]) / el, 1
        ),
        "snapshots_per_client_s": round(snaps_per_client_s, 3),
        "delivered_per_client_s": report.get("snapshots_per_bot_s"),
        "snapshots_skipped": skipped,
        "delivered_fraction": round(delivered, 4),
        "driver_cpu_cores": report.get("driver_cpu_cores"),
        "cpu0_other": _other(busy_a, busy_b, "cpu0", server_cores),
        "cpu1_other": _other(busy_a, busy_b, "cpu1", driver_cores),
        "driver_inputs_per_s": report.get("inputs_per_s"),
        "driver_limited": driver_limited,
    }
    row["holds60"] = bool(
        not driver_limited
        and row["tick_hz"] >= 58.8
        and row["tick_p99_ms"] < 16.7
        and delivered >= 0.95
        and ccu >= clients
    )
    return row


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric column the median of the runs; holds60 when the majority held."""
    row: dict[str, Any] = dict(runs[0])
    for k, v in runs[0].items():
        vals = [r[k] for r in runs if isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool)]
        if isinstance(v, int | float) and not isinstance(v, bool) and len(vals) == len(runs):
            med = float(statistics.median(vals))
            row[k] = int(med) if all(isinstance(x, int) for x in vals) and med.is_integer() else round(med, 3)
    row["holds60"] = sum(bool(r["holds60"]) for r in runs) * 2 > len(runs)
    row["driver_limited"] = sum(bool(r["driver_limited"]) for r in runs) * 2 > len(runs)
    row["runs"] = len(runs)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--game", default="wander", choices=game_names())
    ap.add_argument("--levels", default="100,200,400,600,800,1000,1200,1500")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument(
        "--aoi",
        default="on",
        choices=("on", "off"),
        help="on: interest management + delta snapshots (default); off: the whole world, raw",
    )
    ap.add_argument("--set", action="append", default=[], help="server game config KEY=VALUE")
    ap.add_argument("--repeat", type=int, default=1, help="runs per level; a median row follows each level")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    extra = [x for kv in args.set for x in ("--set", kv)]
    extra += ["--replication", "delta" if args.aoi == "on" else "full"]
    rows = []
    cols = [
        "clients",
        "server_cpu_cores",
        "server_sys_cores",
        "rss_mb",
        "tick_hz",
        "tick_p99_ms",
        "send_p99_ms",
        "bytes_out_per_client_s",
        "inputs_per_s",
        "snapshots_per_client_s",
        "delivered_per_client_s",
        "driver_cpu_cores",
        "cpu0_other",
        "cpu1_other",
        "holds60",
    ]

    def show(row: dict[str, Any], label: str = "") -> None:
        if args.json:
            print(json.dumps(row), flush=True)
            return
        cells = [str(row[c]) for c in cols]
        if row["driver_limited"]:
            cells[-1] += " (driver-limited)"
        print(" | ".join(cells) + label, flush=True)

    if not args.json:
        print(" | ".join(cols))
    for level in [int(x) for x in args.levels.split(",") if x]:
        runs = []
        for _ in range(max(1, args.repeat)):
            row = run_level(args.game, level, args.warmup, args.window, extra)
            row["aoi"] = args.aoi
            runs.append(row)
            show(row)
        if len(runs) > 1:
            med = median_row(runs)
            show(med, f"  <- median of {len(runs)}")
            rows.append(med)
        else:
            rows.append(runs[0])
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"ccu_{args.game}_aoi_{args.aoi}.json", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
