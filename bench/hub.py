"""Hub benchmarks: logins, refreshes, joins, chat fan-out across two hubs, presence.

    python -m bench.hub [--json] [--players 1000] [--seconds 10] [--quick]

Everything runs for real on this machine: a fresh PostgreSQL database, the shared Redis (a random key
prefix), two `arbiter hub` processes (the first with --spawn-local, so joins start real
`arbiter serve` processes), and this process as the players (aiohttp clients).

Rows (issue 11, "Benchmarks"):
- login: p50/p99 latency at 20 logins/s (open loop) with argon2id at OWASP's cost (m=19456 KiB,
  t=2, p=1, the default); target p99 ≤ 250 ms.
- refresh: p50/p99 of refresh-token rotations at 50/s; target p99 ≤ 20 ms.
- join running: p50/p99 of `POST /v1/campaigns/{id}/join` on a running campaign (seat + 60 s join
  token), 50/s; target p99 ≤ 50 ms. join placement: the same when the campaign is not running, so the
  hub places it and the spawner starts `arbiter serve` (a handful of samples).
- fan-out: `--players` streams (half on each hub), in campaigns of 50, each in its campaign's chat
  channel. Chat events are published on the bus at `--fanout-rate` messages/s, as a hub does after
  storing a post, and every hub delivers to its own streams: deliveries/s per hub process (from its
  /metrics) and its CPU; target ≥ 20,000 per hub process. Also `--posts` real posts through the
  HTTP API of both hubs, with the post-to-delivery latency on the other hub.
- presence: presence changes published as game servers do (Redis key + bus event) at
  `--presence-rate`/s for accounts with 10 friends each online: updates/s and deliveries/s per hub.

The machine is shared and noisy: figures vary from run to run. `--quick` is a smoke run (small, and
argon2 at a test cost; its login figure means nothing). The results go to bench/results/hub.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from engine.security.auth import KeyRing
from persistence.redis_bus import encode
from persistence.redis_layout import RedisKeys, open_redis
from persistence.redis_presence import Presence

RESULTS = Path(__file__).resolve().parent / "results" / "hub.json"
READY = re.compile(rb"ARBITER_HUB_READY (http://\S+/)")
PG = os.environ.get("ARBITER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("ARBITER_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CHANNEL_SIZE = 50


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 0.5) * 1000, 2), "p99_ms": round(pct(values, 0.99) * 1000, 2),
            "max_ms": round(max(values, default=float("nan")) * 1000, 2)}  # fmt: skip


# -- processes ----------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    name = f"arbiter_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(f"{PG}/postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@contextlib.asynccontextmanager
async def hub_process(
    pg: str, prefix: str, extra: list[str], ring: KeyRing, redis: str = REDIS
) -> AsyncIterator[tuple[str, int]]:
    """An `arbiter hub` process on a free port (limits raised for load); (its base URL, its pid)."""
    cmd = [sys.executable, "-m", "engine.cli", "--log-level", "WARNING", "hub", "--pg", pg, "--redis", redis,
           "--redis-prefix", prefix, "--port", "0", "--registrations", "1000000", "--login-failures", "1000000",
           "--chat-rate", "1000000", *extra]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, env={**os.environ, **ring.to_env()})
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        m = READY.search(line)
        if not m:
            raise RuntimeError(f"hub did not start: {line!r}")
        yield m.group(1).decode().rstrip("/"), proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Client:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.s = session

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.s.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, out = await self.call(method, path, body, token)
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status} {out}")
        return out

    async def metric(self, name: str, label: str) -> float:
        async with self.s.get(self.base + "/metrics") as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


async def open_loop(rate: float, count: int, op: Callable[[int], Coroutine[Any, Any, None]]) -> float:
    """Start `op(i)` at `rate`/s on an absolute schedule (never waiting for earlier ones); wall seconds."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(op(i)))
    await asyncio.gather(*tasks)
    return loop.time() - t0


async def timed(samples: list[float], coro: Awaitable[Any]) -> Any:
    t = time.perf_counter()
    out = await coro
    samples.append(time.perf_counter() - t)
    return out


# -- the rows -----------------------------------------------------------------------------------------
async def bench_sessions(a: Client, seconds: float) -> dict[str, Any]:
    accounts = []
    for i in range(10):
        body = {"email": f"u{i}@bench.example", "handle": f"user{i}", "password": "bench passphrase"}
        accounts.append(await a.ok("POST", "/v1/auth/register", body))
    logins: list[float] = []
    n = int(20 * seconds)

    async def login(i: int) -> None:
        body = {"login": f"user{i % 10}", "password": "bench passphrase"}
        out = await timed(logins, a.ok("POST", "/v1/auth/login", body))
        accounts[i % 10] = out

    wall = await open_loop(20.0, n, login)
    refreshes: list[float] = []
    tokens = [acc["refresh_token"] for acc in accounts]
    locks = [asyncio.Lock() for _ in tokens]

    async def refresh(i: int) -> None:
        k = i % len(tokens)
        async with locks[k]:  # a family rotates one token at a time
            out = await timed(refreshes, a.ok("POST", "/v1/auth/refresh", {"refresh_token": tokens[k]}))
            tokens[k] = out["refresh_token"]

    await open_loop(50.0, int(50 * seconds / 2), refresh)
    return {"login": {**ms(logins), "rate_per_s": round(n / wall, 1)}, "refresh": ms(refreshes),
            "access": accounts[0]["access_token"]}  # fmt: skip


async def bench_joins(a: Client, b: Client, token: str, seconds: float, placements: int) -> dict[str, Any]:
    placed: list[float] = []
    running: list[float] = []
    camps = []
    for i in range(placements):
        c = await a.ok("POST", "/v1/campaigns", {"title": f"bench {i}", "game": "wander", "max_players": 50}, token)
        await timed(placed, a.ok("POST", f"/v1/campaigns/{c['campaign_id']}/join", None, token))
        camps.append(c["campaign_id"])
    players = []
    for i in range(40):
        g = await b.ok("POST", "/v1/auth/guest", {"device_id": f"bench-join-device-{i:04d}"})
        players.append(g["access_token"])
    cid = camps[0]
    hubs = (a, b)

    async def join(i: int) -> None:
        await timed(running, hubs[i % 2].ok("POST", f"/v1/campaigns/{cid}/join", None, players[i % len(players)]))

    await open_loop(50.0, int(50 * seconds / 2), join)
    return {"join_running": ms(running), "join_placement": ms(placed)}


async def _stream(session: aiohttp.ClientSession, base: str, token: str, channel: str | None,
                  counts: dict[str, int], seen: dict[int, float]) -> aiohttp.ClientWebSocketResponse:  # fmt: skip
    ws = await session.ws_connect(base + "/v1/stream", headers={"Authorization": f"Bearer {token}"}, autoping=True,
                                  max_msg_size=1 << 20)  # fmt: skip
    await ws.receive(timeout=30)  # hello
    if channel:
        await ws.send_str(json.dumps({"op": "join", "channel": channel}))
        await ws.receive(timeout=30)  # history

    async def reader() -> None:
        async for msg in ws:
            data = msg.data
            if data.startswith('{"t":"chat"'):
                counts["chat"] += 1
                if '"probe"' in data:
                    seen.setdefault(json.loads(data)["id"], time.perf_counter())
            elif data.startswith('{"t":"presence"'):
                counts["presence"] += 1

    asyncio.get_running_loop().create_task(reader())
    return ws


async def bench_fanout(a: Client, b: Client, pg: str, prefix: str, pids: list[int], args: argparse.Namespace,
                       session: aiohttp.ClientSession) -> dict[str, Any]:  # fmt: skip
    owner = await a.ok("POST", "/v1/auth/guest", {"device_id": "bench-owner-device-0000"})
    players = args.players
    groups = max(1, players // CHANNEL_SIZE)
    camps = []
    for g in range(groups):
        c = await a.ok("POST", "/v1/campaigns", {"title": f"chat {g}", "game": "wander"}, owner["access_token"])
        camps.append(c["campaign_id"])
    guests = []
    for i in range(players):
        g = await (a if i % 2 else b).ok("POST", "/v1/auth/guest", {"device_id": f"bench-fan-device-{i:05d}"})
        guests.append((g["account"]["account_id"], g["access_token"]))
    conn = await asyncpg.connect(pg)
    try:  # memberships and friendships straight into the tables: setup, not what is measured
        await conn.executemany("INSERT INTO campaign_members (campaign_id, account_id, role) VALUES ($1, $2, 'member')",
                               [(camps[i % groups], acc) for i, (acc, _) in enumerate(guests)])  # fmt: skip
        pairs = []
        for i, (acc, _) in enumerate(guests):
            for d in range(1, 6):  # 10 friends each (5 each way)
                other = guests[(i + d) % players][0]
                pairs += [(acc, other), (other, acc)]
        await conn.executemany("INSERT INTO friends (account_id, friend_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               pairs)  # fmt: skip
    finally:
        await conn.close()
    counts = {"chat": 0, "presence": 0}
    seen: dict[int, float] = {}
    streams = []
    for i, (_, tok) in enumerate(guests):
        base = (a if i % 2 == 0 else b).base
        streams.append(await _stream(session, base, tok, f"c:{camps[i % groups]}", counts, seen))
    redis = open_redis(REDIS)
    keys = RedisKeys(prefix)
    procs = [psutil.Process(p) for p in pids]
    out: dict[str, Any] = {"players": players, "channels": groups}
    try:
        # 1. Fan-out: chat events on the bus at the target rate.
        rate, seconds = args.fanout_rate, args.seconds
        before = [await c.metric("arbiter_hub_deliveries_total", 'type="chat"') for c in (a, b)]
        cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
        received0 = counts["chat"]
        t0 = time.perf_counter()
        sent = 0
        batch = max(1, int(rate / 100))
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                async with redis.pipeline(transaction=False) as p:
                    for k in range(min(due, batch * 4)):
                        n = sent + k
                        ev = {"t": "chat", "channel": f"c:{camps[n % groups]}", "id": -1 - n, "from": "bench",
                              "handle": "bench", "text": "x" * 40, "ts": time.time()}  # fmt: skip
                        p.publish(keys.bus, encode(ev))
                    await p.execute()
                sent += min(due, batch * 4)
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # let the last ones arrive
        after = [await c.metric("arbiter_hub_deliveries_total", 'type="chat"') for c in (a, b)]
        cpu1 = [sum(p.cpu_times()[:2]) for p in procs]
        per_hub = [(after[i] - before[i]) / wall for i in range(2)]
        out["fanout"] = {
            "messages_per_s": round(sent / wall, 1),
            "deliveries_per_s_per_hub": [round(x) for x in per_hub],
            "hub_cpu_per_s": [round((cpu1[i] - cpu0[i]) / wall, 2) for i in range(2)],
            "received_per_s": round((counts["chat"] - received0) / wall),
            "expected_per_s": round(sent * (players / groups) / wall),
        }
        # 2. Real posts through both hubs' HTTP API; latency to delivery on streams of the other hub.
        post_lat: list[float] = []
        deliver_lat: list[float] = []
        poster = [(tok, camps[i % groups]) for i, (_, tok) in enumerate(guests[: 2 * groups])]

        async def post(i: int) -> None:
            tok, cid = poster[i % len(poster)]
            t = time.perf_counter()
            msg = await timed(post_lat, (a, b)[i % 2].ok("POST", f"/v1/campaigns/{cid}/chat", {"text": "probe"}, tok))
            for _ in range(200):
                if msg["id"] in seen:
                    deliver_lat.append(seen[msg["id"]] - t)
                    return
                await asyncio.sleep(0.005)

        await open_loop(args.post_rate, args.posts, post)
        out["posts"] = {"post": ms(post_lat), "post_to_delivery": ms(deliver_lat)}

        # 3. Presence: game-server style updates (key + bus event), each watched by 10 online friends.
        presence = Presence(redis, keys)
        before = [await c.metric("arbiter_hub_deliveries_total", 'type="presence"') for c in (a, b)]
        t0 = time.perf_counter()
        updates = 0
        prate = args.presence_rate
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(elapsed * prate) - updates
            if due > 0:
                accs = [guests[(updates + k) % players][0] for k in range(min(due, 200))]
                await presence.game_set(accs, camps[0], "bench-server", 5.0)
                async with redis.pipeline(transaction=False) as p:
                    for acc in accs:
                        p.publish(keys.bus, encode({"t": "presence", "account": acc, "status": "in_campaign",
                                                    "campaign": camps[0]}))  # fmt: skip
                    await p.execute()
                updates += len(accs)
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        after = [await c.metric("arbiter_hub_deliveries_total", 'type="presence"') for c in (a, b)]
        delivered = [round((after[i] - before[i]) / wall) for i in range(2)]
        out["presence"] = {"updates_per_s": round(updates / wall), "deliveries_per_s_per_hub": delivered}
    finally:
        for ws in streams:
            await ws.close()
        await redis.aclose()
    return out


async def _forget(prefix: str) -> None:
    """Leave the shared Redis as it was: every key of this run's prefix goes."""
    redis = open_redis(REDIS)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ring = KeyRing.generate("bench")
    prefix = f"bench{secrets.token_hex(3)}:"
    argon = ["--argon2-memory-kib", "256", "--argon2-time-cost", "1"] if args.quick else []
    try:
        with tempfile.TemporaryDirectory(prefix="arbiter-bench-hub-") as tmp:
            async with database() as pg:
                spawn = ["--spawn-local", "--spawn-capacity", str(args.placements + 1), "--spawn-data-dir", tmp]
                async with hub_process(pg, prefix, [*argon, *spawn], ring) as (url_a, pid_a), \
                        hub_process(pg, prefix, argon, ring) as (url_b, pid_b):  # fmt: skip
                    conn = aiohttp.TCPConnector(limit=0)
                    async with aiohttp.ClientSession(connector=conn) as session:
                        a, b = Client(url_a, session), Client(url_b, session)
                        sessions = await bench_sessions(a, args.login_seconds)
                        joins = await bench_joins(a, b, sessions.pop("access"), args.seconds, args.placements)
                        fan = await bench_fanout(a, b, pg, prefix, [pid_a, pid_b], args, session)
    finally:
        await _forget(prefix)  # the shared Redis as it was
    return {
        "argon2": "test cost (quick)" if args.quick else "OWASP m=19456 KiB t=2 p=1",
        **sessions, **joins, **fan,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
    }  # fmt: skip


def table(r: dict[str, Any]) -> str:
    f = r["fanout"]
    rows = [
        ("login p50/p99 @20/s", f"{r['login']['p50_ms']} / {r['login']['p99_ms']} ms", "p99 ≤ 250 ms"),
        ("refresh p50/p99", f"{r['refresh']['p50_ms']} / {r['refresh']['p99_ms']} ms", "p99 ≤ 20 ms"),
        ("join running p50/p99", f"{r['join_running']['p50_ms']} / {r['join_running']['p99_ms']} ms", "p99 ≤ 50 ms"),
        ("join + placement p50/p99", f"{r['join_placement']['p50_ms']} / {r['join_placement']['p99_ms']} ms "
                                     f"(n={r['join_placement']['n']})", "-"),
        (f"fan-out, {r['players']} players, 2 hubs", f"{f['deliveries_per_s_per_hub']} deliveries/s per hub "
         f"(CPU {f['hub_cpu_per_s']} s/s)", "≥ 20,000 per hub"),
        ("chat post p50/p99", f"{r['posts']['post']['p50_ms']} / {r['posts']['post']['p99_ms']} ms", "-"),
        ("post → delivery p50/p99",
         f"{r['posts']['post_to_delivery']['p50_ms']} / {r['posts']['post_to_delivery']['p99_ms']} ms", "-"),
        ("presence updates/s", f"{r['presence']['updates_per_s']} ({r['presence']['deliveries_per_s_per_hub']} "
                               "deliveries/s per hub)", "-"),
    ]  # fmt: skip
    width = max(len(x[0]) for x in rows)
    return "\n".join(f"{name:<{width}}  {value}   [{target}]" for name, value, target in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="hub benchmarks")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--players", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each rate phase")
    ap.add_argument("--login-seconds", type=float, default=15.0)
    ap.add_argument("--placements", type=int, default=4, help="joins that start a campaign")
    ap.add_argument("--fanout-rate", type=float, default=1000.0, help="chat messages/s on the bus")
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--post-rate", type=float, default=40.0)
    ap.add_argument("--presence-rate", type=float, default=2000.0)
    ap.add_argument("--quick", action="store_true", help="a small smoke run (argon2 at a test cost)")
    args = ap.parse_args(argv)
    if args.quick:
        args.players, args.seconds, args.login_seconds, args.placements = 60, 1.0, 1.0, 1
        args.fanout_rate, args.posts, args.presence_rate = 100.0, 10, 100.0
    result = asyncio.run(run(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
