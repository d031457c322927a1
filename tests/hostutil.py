"""An in-process `arbiter host` for tests: the same Host the CLI runs, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from engine.config import ServerConfig
from engine.host import CampaignSpec, Host, HostConfig
from engine.security.auth import KeyRing


@contextlib.asynccontextmanager
async def running_host(
    campaigns: Sequence[CampaignSpec] = (),
    *,
    ring: KeyRing | None = None,
    host: HostConfig | None = None,
    **overrides: Any,
) -> AsyncIterator[Host]:
    """A Host on a free port with `campaigns` started, ticking, stopped (drained) on exit."""
    overrides.setdefault("data_dir", "")  # in memory unless a test asks for a data dir
    h = Host(ServerConfig(port=0, **overrides), host or HostConfig(), ring=ring)
    await h.start()
    task = asyncio.create_task(h.run())
    try:
        for spec in campaigns:
            await h.start_campaign(spec)
        yield h
    finally:
        h.request_stop()
        await asyncio.wait_for(task, 30)


def wander(cid: str, npcs: int = 8, max_players: int = 8, seed: int = 1) -> CampaignSpec:
    """A small wander campaign (the density tests' and benchmark's unit)."""
    return CampaignSpec(cid, "wander", seed, {"npcs": npcs, "max_players": max_players})


def curl(h: Host, path: str) -> str:
    return f"http://127.0.0.1:{h.port}{path}"


def ws(h: Host, cid: str | None = None) -> str:
    return f"ws://127.0.0.1:{h.port}/" + (f"c/{cid}/" if cid else "")
