"""`arbiter demo`: a campaign server in a child process plus bots in this one, with live figures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from functools import partial
from typing import Any

from engine.security.auth import KeyRing, TokenIssuer
from engine.tools.bots import BotConfig, run_bots
from engine.tools.launcher import start_server


def summarize(first: dict[str, Any], last: dict[str, Any], bots: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The figures a user asks about after a run, from two /stats samples and the bots' report."""
    ccu = int(last.get("ccu", 0))
    bytes_out = int(last["bytes_out"]) - int(first["bytes_out"])
    return {
        "game": last.get("game"),
        "seconds": round(seconds, 2),
        "tick_hz": last["tick_hz"],
        "tick_p50_ms": last["tick_p50_ms"],
        "tick_p99_ms": last["tick_p99_ms"],
        "send_p99_ms": last["send_p99_ms"],
        "overruns": last["overruns"],
        "ccu": ccu,
        "bytes_out_per_client_s": round(bytes_out / max(seconds, 1e-9) / max(ccu, 1), 1),
        "inputs_accepted": last["inputs_accepted"],
        "inputs_refused": last["inputs_refused"],
        "snapshots_per_client_s": bots["snapshots_per_bot_s"],
        "bots_moved": bots["moved"],
        "rtt_p50_ms": bots["rtt_p50_ms"],
        "prediction_error_mean": bots.get("prediction_error_mean"),
        "correction_rate": bots.get("correction_rate"),
        "interp_starved_rate": bots.get("interp_starved_rate"),
        "server_rss_mb": last["rss_mb"],
        # fair play: honest bots must raise nothing (docs/fairplay.md)
        "fairplay_violations": sum(last.get("fairplay", {}).get("violations", {}).values()),
        "fairplay_decisions": sum(last.get("fairplay", {}).get("decisions", {}).values()),
        # what happened in the game, as the bots were told (the events of the game's spec, by name)
        "events": bots.get("events", {}),
        "brain": bots.get("brain", {}),
        "connect_errors": bots.get("connect_errors", {}),
    }


async def run_demo(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="arbiter-demo-")
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    say(f"starting a {args.game} campaign (seed {args.seed}); the first start compiles kernels...")
    # Join tokens on, with a key made for this run: the bots get one signed token per connection.
    ring = KeyRing.generate()
    server = await asyncio.to_thread(
        partial(
            start_server,
            ["--game", args.game, "--seed", str(args.seed), "--data-dir", data_dir, "--campaign", "demo"],
            env=ring.to_env(),
        )
    )
    say(f"server ready at {server.url}  (health: http://{server.host}:{server.port}/health)")
    issuer = TokenIssuer(ring)
    web = f"http://{server.host}:{server.port}"
    # Tokens ride in the URL fragment, which the browser never sends to a server or a log.
    say(f"watch the bots play:  {web}/watch#token={issuer.issue('demo-admin', 'demo', role='admin', ttl=86400)}")
    say(f"play against them:    {web}/play#token={issuer.issue('you', 'demo', name='you', ttl=86400)}  (joins once)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    duration = args.duration if args.duration > 0 else 10**9
    # Every figure (fair play, memory) is behind an admin token (docs/security.md).
    admin_ttl = min(86400, max(600, int(args.duration) + 600))
    server.admin_token = issuer.issue("demo-admin", "demo", role="admin", ttl=admin_ttl)
    cfg = BotConfig(
        url=server.url,
        count=args.bots,
        duration=duration,
        seed=args.seed,
        campaign="demo",
        token_factory=lambda account, campaign: issuer.issue(account, campaign, name=account, ttl=600),
    )
    try:
        bots_task = asyncio.create_task(run_bots(cfg, stop))
        first = await asyncio.to_thread(server.stats)
        t0 = time.monotonic()
        peak_ccu = 0
        while not bots_task.done():
            done, _ = await asyncio.wait({bots_task}, timeout=1.0)
            if done:
                break
            s = await asyncio.to_thread(server.stats)
            peak_ccu = max(peak_ccu, int(s["ccu"]))
            el = time.monotonic() - t0
            kbs = (s["bytes_out"] - first["bytes_out"]) / max(el, 1e-9) / max(s["ccu"], 1) / 1024
            say(
                f"t={el:5.1f}s tick={s['tick']:6d} {s['tick_hz']:5.1f} Hz  p99 {s['tick_p99_ms']:.2f} ms  "
                f"ccu {s['ccu']:4d}  out {kbs:7.1f} KiB/s/client  inputs ok {s['inputs_accepted']} "
                f"refused {s['inputs_refused']}"
            )
        report = (await bots_task).as_dict()
        last = await asyncio.to_thread(server.stats)
        # The bots have left by now: count the clients that played, not who is still connected.
        last["ccu"] = max(peak_ccu, report["connected"])
        summary = summarize(first, last, report, time.monotonic() - t0)
    finally:
        code = await asyncio.to_thread(server.stop)
    summary["server_exit_code"] = code
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print("\nsummary")
        for k, v in summary.items():
            print(f"  {k:>24}: {v}")
    return 0
