"""Honest bots beside an attack: `arbiter bots` in a process of its own (so the attacker's work in
the test's process does not slow them down), checked to keep playing at the send rate."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

# Each honest bot's snapshots a second at the 20 Hz send rate, attack or not (issue #9's bar).
MIN_SNAPSHOTS_PER_S = 19.0


@asynccontextmanager
async def honest_bots(
    url: str,
    game: str,
    count: int,
    joined: Callable[[], Awaitable[bool]],
    *,
    seconds: float,
    campaign: str = "default",
    env: dict[str, str] | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """`count` bots play for `seconds`; the block runs once `joined()` says they are in. After it the
    list holds their report, already checked: all connected, each at >= MIN_SNAPSHOTS_PER_S."""
    cmd = [sys.executable, "-m", "engine.cli", "bots", "--url", url, "--game", game, "--count", str(count),
           "--duration", str(seconds), "--campaign", campaign, "--json", "--full-decoders", str(count)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await joined():
        assert loop.time() < deadline and proc.returncode is None, "the honest bots did not join"
        await asyncio.sleep(0.1)
    out: list[dict[str, Any]] = []
    yield out
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["connected"] == count and report["connect_failures"] == 0, report
    assert report["snapshots_per_bot_s_min"] >= MIN_SNAPSHOTS_PER_S, report
    out.append(report)
