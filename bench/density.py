"""Density: campaigns × players in one `arbiter host` process on this 2-core machine.

    python -m bench.density [--game wander] [--players 5] [--ladder 100,150,200] [--idle 100]
                            [--window 20] [--warmup 5] [--relocation 10] [--quick] [--json]

1. Load ladder: per level N, a fresh `arbiter host` pinned to CPU 0 starts N small campaigns (admin
   API), the bot driver (`--driver` mode of this module: `arbiter bots`' engine, one run per
   campaign, at the honest bots' 20 inputs/s) pinned to CPU 1 joins P players to each; after the
   warm-up, a window measured from two /stats/full samples of the host (every campaign's tick
   count) and its CPU times. A level holds when every campaign ran at >= 59 Hz, RSS <= 1 GB, the
   bots got >= 95 % of their snapshots and the driver delivered its load.
2. Idle, hibernated, woken (`--idle` campaigns, no players): the marginal RSS of a loaded idle
   campaign (RSS with one, then with N more), the CPU of a loaded idle campaign, the host's CPU with
   all N hibernated (≈ 0 each), then each woken by a player's hello: hello → welcome as the player
   sees it, and the host's own wake time.
3. Relocation (`--relocation K` campaigns × P players, needs PostgreSQL): two hosts on one database;
   host A is killed with SIGKILL and its data dir deleted; host B is asked to start the campaigns
   (what the hub does when A's registration expires) and restores them from PostgreSQL; the
   players' SDK rejoins B. Time from the kill to every player holding a snapshot from B.

Campaigns are "realistic small": wander with 20 NPCs and max_players 8 (default), or startales on a
1000×1000 map with 8 planets and 20 drones (`--game startales`). The machine is shared and noisy:
quote the figures as such. Results: bench/results/density.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from engine.security.auth import KeyRing, TokenIssuer
from engine.tools.launcher import ServerProcess, start_server

RESULTS = Path(__file__).resolve().parent / "results"
PG = "postgresql://postgres@127.0.0.1:5432/"
CONFIGS: dict[str, dict[str, int]] = {
    "wander": {"npcs": 20, "max_players": 8},
    "startales": {"planets": 8, "drones": 20, "width": 1000, "height": 1000, "max_players": 8},
}


# -- talking to a host ------------------------------------------------------------------------------
class Host:
    def __init__(self, proc: ServerProcess, secret: str, name: str = "host") -> None:
        self.proc = proc
        self.issuer = TokenIssuer(KeyRing.single(secret))
        self.admin = self.issuer.issue("bench", name, role="admin", ttl=3600)
        self.ps = psutil.Process(proc.proc.pid)
        admin_line = next((line for line in proc.log if "admin API on http" in line), "")
        self.admin_url = admin_line.rsplit(" ", 1)[-1] if admin_line else ""

    def call(self, method: str, path: str, body: Any = None, base: str | None = None) -> Any:
        url = (base or self.admin_url) + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.call("GET", "/stats/full", base=f"http://{self.proc.host}:{self.proc.port}")
        return stats

    def start(self, game: str, n: int, prefix: str = "d") -> list[str]:
        ids = [f"{prefix}{i:03d}" for i in range(n)]
        for i, cid in enumerate(ids):
            body = {"campaign": cid, "game": game, "seed": i + 1, "config": CONFIGS[game]}
            self.call("POST", "/admin/campaigns", body)
        return ids

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def main_thread_cpu(self) -> float:
        """The loop's thread (ticks, sends, sockets); the others are the stores' writer and helpers."""
        return next((t.user_time + t.system_time for t in self.ps.threads() if t.id == self.ps.pid), 0.0)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20


def launch(data_dir: str, secret: str, extra: list[str] = (), cpu: int | None = 0) -> Host:  # type: ignore[assignment]
    env = {"ARBITER_JWT_SECRET": secret}
    proc = start_server(["--data-dir", data_dir, "--admin-port", "0", "--capacity", "1000", "--fairplay", "observe",
                         *extra], cpu=cpu, env=env, command="host")  # fmt: skip
    deadline = time.monotonic() + 10
    while not any("admin API on http" in line for line in proc.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    return Host(proc, secret)


# -- the driver (a separate process, pinned to the other core) --------------------------------------
async def _drive(url: str, campaigns: list[str], players: int, duration: float, secret: str) -> dict[str, Any]:
    from engine.tools.bots import BotConfig, run_bots

    issuer = TokenIssuer(KeyRing.single(secret))

    def token(account: str, campaign: str) -> str:
        return str(issuer.issue(account, campaign, name=account, ttl=3600))

    base = url.rstrip("/")
    # One bot scheduler for every player of every campaign (bot i plays campaign i % N).
    urls = tuple(f"{base}/c/{cid}/" for cid in campaigns)
    r = await run_bots(BotConfig(urls=urls, count=len(urls) * players, duration=duration, token_factory=token,
                                 full_decoders=len(urls), connect_concurrency=32))  # fmt: skip
    return {
        "connected": r.connected,
        "inputs_per_s": r.inputs_per_s,
        "inputs_target_per_s": r.inputs_target_per_s,
        "late_inputs": r.late_inputs,
        "snapshots_per_bot_s_min": r.snapshots_per_bot_s_min,
        "snapshots_per_bot_s_mean": r.snapshots_per_bot_s,
        "closed_early": r.closed_early,
        "moved": r.moved,
        "driver_cpu_cores": r.driver_cpu_cores,
    }


def driver_main(args: argparse.Namespace) -> None:
    import uvloop

    campaigns = args.campaigns_list.split(",")
    out = uvloop.run(_drive(args.url, campaigns, args.players, args.duration, os.environ["ARBITER_JWT_SECRET"]))
    print(json.dumps(out), flush=True)


# -- 1. load ladder -----------------------------------------------------------------------------------
def per_campaign_ticks(stats: dict[str, Any]) -> dict[str, int]:
    return {cid: int(v["ticks"]) for cid, v in stats["per_campaign"].items()}


def load_level(game: str, n: int, players: int, warmup: float, window: float, secret: str) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="density-")
    host = launch(tmp, secret, ["--hibernate-after", "0"])
    try:
        ids = host.start(game, n)
        cmd = [sys.executable, "-m", "bench.density", "--driver", "--url", host.proc.url, "--campaigns-list",
               ",".join(ids), "--players", str(players), "--duration", str(warmup + window + 5 + n * players / 100)]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "1", *cmd]
        env = {**os.environ, "ARBITER_JWT_SECRET": secret}
        driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60 + n * players / 20
        while host.stats()["ccu"] < n * players and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
        time.sleep(warmup)
        a, cpu_a, main_a, t_a = host.stats(), host.cpu(), host.main_thread_cpu(), time.monotonic()
        time.sleep(window)
        b, cpu_b, main_b, t_b = host.stats(), host.cpu(), host.main_thread_cpu(), time.monotonic()
        rss = host.rss_mb()
        out, err = driver.communicate(timeout=600)
    finally:
        host.proc.stop(60)
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        report = {"error": err[-2000:]}
    el = t_b - t_a
    ta, tb = per_campaign_ticks(a), per_campaign_ticks(b)
    hz = [(tb[c] - ta.get(c, 0)) / el for c in tb]
    pa, pb = a["per_campaign"], b["per_campaign"]
    inputs = sum(pb[c]["inputs"] - pa.get(c, {}).get("inputs", 0) for c in pb) / el
    snaps = sum(pb[c]["snapshots_sent"] - pa.get(c, {}).get("snapshots_sent", 0) for c in pb) / el
    skipped = sum(pb[c]["snapshots_skipped"] - pa.get(c, {}).get("snapshots_skipped", 0) for c in pb) / el
    cores = (cpu_b - cpu_a) / el
    ccu = int(b["ccu"])
    delivered = report.get("snapshots_per_bot_s_mean", 0.0) / 20.0
    # The driver delivered its load when the host received (nearly) every player's 20 inputs/s.
    driver_limited = report.get("connected", 0) < n * players or inputs < 0.95 * 20.0 * n * players
    row = {
        "game": game, "campaigns": n, "players_per_campaign": players, "ccu": ccu,
        "campaign_hz_min": round(min(hz), 2), "campaign_hz_p1": round(float(np.percentile(hz, 1)), 2),
        "campaign_hz_mean": round(float(np.mean(hz)), 2), "host_cpu_cores": round(cores, 3),
        "host_loop_thread_cores": round((main_b - main_a) / el, 3), "rss_mb": round(rss, 1),
        "host_inputs_per_s": round(inputs, 1), "host_snapshots_per_player_s": round(snaps / max(ccu, 1), 3),
        # Skipped: the player's socket had a backlog (it did not read: the driver's side).
        "host_snapshots_skipped_per_player_s": round(skipped / max(ccu, 1), 3),
        "cpu_ms_per_campaign_s": round(cores / n * 1000, 2),
        "cpu_ms_per_player_s": round(cores / max(ccu, 1) * 1000, 3),
        "snapshots_per_bot_s_mean": report.get("snapshots_per_bot_s_mean"),
        "snapshots_per_bot_s_min": report.get("snapshots_per_bot_s_min"), "delivered_fraction": round(delivered, 3),
        "driver_cpu_cores": report.get("driver_cpu_cores"), "driver_inputs_per_s": report.get("inputs_per_s"),
        "driver_limited": driver_limited,
    }  # fmt: skip
    row["holds"] = bool(not driver_limited and row["campaign_hz_min"] >= 59.0 and rss <= 1024 and delivered >= 0.95)
    return row


# -- 2. idle, hibernated, woken -------------------------------------------------------------------------
async def _hello(url: str, token: str) -> float:
    from netcode.client import ArbiterClient

    t0 = time.perf_counter()
    c = await ArbiterClient.connect(url, "waker", token, timeout=30)
    took = time.perf_counter() - t0
    await c.close()
    return took


def _window_cpu(host: Host, seconds: float) -> float:
    c0, t0 = host.cpu(), time.monotonic()
    time.sleep(seconds)
    return (host.cpu() - c0) / (time.monotonic() - t0)


def idle_section(game: str, n: int, window: float, secret: str) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="density-idle-")
    host = launch(tmp, secret, ["--hibernate-after", "0"])
    try:
        host.start(game, 1, prefix="warm")
        time.sleep(2)
        empty_cpu = _window_cpu(host, window / 2)
        rss1 = host.rss_mb()
        ids = host.start(game, n)
        time.sleep(3)
        rss_n = host.rss_mb()
        loaded_cpu = _window_cpu(host, window)
        threads = host.ps.num_threads()
        for cid in ids:
            host.call("POST", f"/admin/campaigns/{cid}/hibernate")
        time.sleep(2)
        rss_hib = host.rss_mb()
        hib_cpu = _window_cpu(host, window)
        url = host.proc.url.rstrip("/")
        hello = [asyncio.run(_hello(f"{url}/c/{cid}/", str(host.issuer.issue("waker", cid, ttl=600)))) for cid in ids]
        wake = host.stats()["wake_ms"]
    finally:
        host.proc.stop(60)
        shutil.rmtree(tmp, ignore_errors=True)
    h = np.array(hello) * 1e3
    return {
        "campaigns": n, "rss_one_campaign_mb": round(rss1, 1), "rss_loaded_mb": round(rss_n, 1),
        "marginal_rss_per_idle_campaign_mb": round((rss_n - rss1) / n, 3), "threads": threads,
        "cpu_one_campaign_cores": round(empty_cpu, 4),
        "cpu_per_idle_loaded_campaign_mcores": round((loaded_cpu - empty_cpu) / n * 1000, 3),
        "rss_all_hibernated_mb": round(rss_hib, 1),
        "cpu_all_hibernated_cores": round(hib_cpu, 4),
        "cpu_per_hibernated_campaign_mcores": round(max(0.0, hib_cpu - empty_cpu) / n * 1000, 4),
        "wake_hello_to_welcome_ms_p50": round(float(np.percentile(h, 50)), 1),
        "wake_hello_to_welcome_ms_p99": round(float(np.percentile(h, 99)), 1),
        "wake_host_ms": wake,
    }  # fmt: skip


# -- 3. relocation --------------------------------------------------------------------------------------
async def _relocation(game: str, k: int, players: int, secret: str, db: str) -> dict[str, Any]:
    from netcode.client import ArbiterClient, FixedLocator, Reconnect

    tmp = Path(tempfile.mkdtemp(prefix="density-reloc-"))
    pg = ["--pg", PG + db]
    a = await asyncio.to_thread(launch, str(tmp / "a"), secret, pg, None)
    b = await asyncio.to_thread(launch, str(tmp / "b"), secret, pg, None)
    clients: list[Any] = []
    try:
        ids = await asyncio.to_thread(a.start, game, k)
        where: dict[str, FixedLocator] = {}
        for cid in ids:
            for p in range(players):
                name = f"{cid}-p{p}"

                def fresh(n: str = name, c: str = cid) -> str:
                    return str(a.issuer.issue(n, c, ttl=600))

                loc = where[name] = FixedLocator(a.proc.url.rstrip("/") + f"/c/{cid}/", fresh)
                clients.append(await ArbiterClient.connect(loc.url, name, fresh(),
                                                           reconnect=Reconnect(loc, timeout=120.0)))  # fmt: skip
        for _ in range(40):  # two seconds of play
            for c in clients:
                c.send_input(0.3, -0.2)
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        t_kill = loop.time()
        a.proc.proc.send_signal(signal.SIGKILL)
        a.proc.proc.wait(10)
        shutil.rmtree(tmp / "a")
        for name, loc in where.items():
            loc.url = b.proc.url.rstrip("/") + f"/c/{name.rsplit('-', 1)[0]}/"
        t_start = loop.time()
        await asyncio.gather(*(asyncio.to_thread(b.call, "POST", "/admin/campaigns",
                                                 {"campaign": cid, "game": game, "config": CONFIGS[game]})
                               for cid in ids))  # fmt: skip
        t_started = loop.time()
        for c in clients:
            await c.wait_rejoined(120.0)
            await c.next_snapshot(10.0)
        t_back = loop.time()
    finally:
        for c in clients:
            await c.close()
        a.proc.kill()
        b.proc.stop(60)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"campaigns": k, "players": k * players, "start_on_b_s": round(t_started - t_start, 3),
            "relocation_s": round(t_back - t_kill, 3)}  # fmt: skip


def relocation_section(game: str, k: int, players: int, secret: str) -> dict[str, Any]:
    import asyncpg

    async def run() -> dict[str, Any]:
        db = f"arbiter_density_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(PG + "postgres", timeout=5)
        await admin.execute(f'CREATE DATABASE "{db}"')
        try:
            return await _relocation(game, k, players, secret, db)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        return {"skipped": f"PostgreSQL not reachable: {exc}"}


# -- main -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--game", default="wander", choices=sorted(CONFIGS))
    ap.add_argument("--players", type=int, default=5)
    ap.add_argument("--ladder", default="100,150,200", help="campaign counts of the load ladder")
    ap.add_argument("--idle", type=int, default=100, help="campaigns of the idle/hibernate/wake section (0: skip)")
    ap.add_argument("--relocation", type=int, default=10, help="campaigns relocated (0: skip; needs PostgreSQL)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="small and short: proves the bench runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--campaigns-list", help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=30.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.driver:
        driver_main(args)
        return 0
    if args.quick:
        args.ladder, args.idle, args.relocation, args.warmup, args.window = "10", 10, 2, 1.0, 3.0
    secret = secrets.token_hex(32)
    out: dict[str, Any] = {"bench": "density", "game": args.game, "config": CONFIGS[args.game],
                           "players": args.players, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "load": []}  # fmt: skip
    for n in [int(x) for x in args.ladder.split(",") if x]:
        row = load_level(args.game, n, args.players, args.warmup, args.window, secret)
        out["load"].append(row)
        if not args.json:
            print(json.dumps(row), flush=True)
    held = [r["campaigns"] for r in out["load"] if r["holds"]]
    out["largest_holding"] = max(held, default=0)
    if args.idle:
        out["idle"] = idle_section(args.game, args.idle, args.window / 2, secret)
        if not args.json:
            print(json.dumps(out["idle"]), flush=True)
    if args.relocation:
        out["relocation"] = relocation_section(args.game, args.relocation, args.players, secret)
        if not args.json:
            print(json.dumps(out["relocation"]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"density_{args.game}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out) if args.json else f"largest campaign count that held: {out['largest_holding']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
