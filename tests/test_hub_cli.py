"""`arbiter hub` on the command line: every mistake is one line and exit code 2; `--grant-admin`
makes an admin; the hub serves /health and Prometheus /metrics once it says it is ready."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import hub as bench_hub
from tests.hubutil import REDIS_URL, RING, Api, redis_prefix
from tests.pgutil import dsn, fresh_database


def _hub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "hub", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})  # fmt: skip


def test_mistakes_are_one_line_and_exit_2() -> None:
    keys = RING.to_env()
    no_key = {k: "" for k in ("ARBITER_JWT_SECRET", "ARBITER_JWT_KEYS", "ARBITER_JWT_KEYFILE")}
    cases = [
        ((), {**keys, "ARBITER_PG_DSN": ""}, "--pg DSN is required"),
        (("--pg", "postgresql://x@127.0.0.1:1/none"), no_key, "no signing key"),
        (("--pg", "postgresql://postgres@127.0.0.1:1/none"), keys, "cannot reach PostgreSQL"),
        (("--pg", "postgresql://x@h/db", "--redis-prefix", "bad prefix!"), keys, "prefix"),
        (("--pg", "postgresql://x@h/db", "--max-players", "1"), keys, "--max-players"),
    ]
    for args, env, expect in cases:
        out = _hub(*args, env=env)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("arbiter hub:") and expect in lines[0], out.stderr


async def test_grant_admin_health_and_metrics() -> None:
    async with fresh_database() as db, redis_prefix() as prefix:
        cheap = ["--argon2-memory-kib", "256", "--argon2-time-cost", "1"]
        async with bench_hub.hub_process(dsn(db), prefix, cheap, RING, REDIS_URL) as (url, _), Api(url) as api:
            await api.register("root")
            async with aiohttp.ClientSession() as http, http.get(url + "/health") as r:
                assert r.status == 200 and (await r.json())["redis"] is True
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
                text = await r.text()
            names = {f.name for f in text_string_to_metric_families(text)}
            assert {"arbiter_hub_requests", "arbiter_hub_logins", "arbiter_hub_streams"} <= names
            assert 'route="/v1/auth/register",status="201"' in text
        env = RING.to_env()
        out = await asyncio.to_thread(_hub, "--pg", dsn(db), "--grant-admin", "root", env=env)
        assert out.returncode == 0 and "is an admin" in out.stdout, out.stderr
        out = await asyncio.to_thread(_hub, "--pg", dsn(db), "--grant-admin", "nobody", env=env)
        assert out.returncode == 2 and "no account with handle 'nobody'" in out.stderr
