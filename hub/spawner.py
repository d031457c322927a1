"""`arbiter hub --spawn-local`: the hub starts `arbiter serve` processes on its own machine.

The spawner is a placement handler like any other: it registers in Redis (kind `spawner`, with
`spawn_capacity` campaign slots and its data directory as its disk id) and answers `start` requests
from its control queue, so every hub process, not only its own, can place campaigns on it. For each
campaign it runs

    python -m engine.cli serve --campaign ID --game G --seed S --max-players N --port 0
        --data-dir DATA --hub-prefix P --public-url ws://HOST:{port}/ --server-id ID [--set k=v ...]

with the hub's PostgreSQL DSN and Redis URL in its environment (ARBITER_PG_DSN, ARBITER_HUB_REDIS),
waits for its ARBITER_READY line, and answers with the URL. The child registers itself (engine/hub_link.py)
and is the one players connect to. Its log goes to DATA/logs/ID.log. A child that exits frees its
slot; at the hub's shutdown every child gets SIGTERM (they shut down gracefully, journal flushed).
If the hub is killed, its children keep serving: they are registered on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis.asyncio as aioredis

from hub.config import HubConfig
from persistence.redis_layout import REDIS_DOWN, RedisKeys, pause
from persistence.redis_registry import (
    CampaignLoad,
    CampaignSpec,
    PlacementError,
    Registry,
    ServerRecord,
    serve_control,
)

log = logging.getLogger("arbiter.hub.spawner")

READY_RE = re.compile(r"ARBITER_READY ws://[^ ]*:(\d+)/")
STOP_GRACE_S = 10.0


@dataclass(slots=True, eq=False)
class Child:
    spec: CampaignSpec
    proc: asyncio.subprocess.Process | None = None
    url: str = ""
    server_id: str = ""
    ready: asyncio.Future[tuple[str, str]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    log_file: IO[bytes] | None = None


class LocalSpawner:
    def __init__(self, cfg: HubConfig, redis: aioredis.Redis, blocking: aioredis.Redis, keys: RedisKeys,
                 server_id: str) -> None:  # fmt: skip
        self.cfg = cfg
        self.redis = redis
        self.blocking = blocking
        self.keys = keys
        self.registry = Registry(redis, keys)
        self.id = server_id
        self.root = Path(cfg.spawn_data_dir).resolve()
        self.data_id = f"{socket.gethostname()}:{self.root}"
        self.children: dict[str, Child] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def record(self) -> ServerRecord:
        camps = {
            cid: CampaignLoad(max_players=c.spec.max_players, game=c.spec.game,
                              state="running" if c.url else "starting")
            for cid, c in self.children.items()
        }  # fmt: skip
        return ServerRecord(id=self.id, url="", kind="spawner", accepts=not self._closing,
                            capacity=self.cfg.spawn_capacity, data=self.data_id, campaigns=camps,
                            health="stopping" if self._closing else "ok")  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat and answer control requests until `stop` is set."""
        await asyncio.gather(self._heartbeat(stop),
                             serve_control(self.redis, self.blocking, self.keys, self.id, self, stop))  # fmt: skip

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        ttl = max(3.0, self.cfg.spawn_heartbeat_s * 4)
        while True:
            with contextlib.suppress(*REDIS_DOWN):
                await self.registry.publish(self.record(), ttl)
            if await pause(stop, self.cfg.spawn_heartbeat_s):
                return

    # -- ControlHandler ----------------------------------------------------------------------------
    async def start_campaign(self, spec: CampaignSpec) -> tuple[str, str]:
        child = self.children.get(spec.campaign)
        if child is None:
            if self._closing:
                raise PlacementError("this spawner is shutting down")
            if len(self.children) >= self.cfg.spawn_capacity:
                raise PlacementError("no free slot on this spawner")
            child = self.children[spec.campaign] = Child(spec, server_id=f"{self.id}.{secrets.token_hex(4)}")
            child.ready.add_done_callback(_retrieve)  # nobody may be waiting when it fails
            self._track(self._spawn(child))
        return await asyncio.shield(child.ready)

    async def stop_campaign(self, campaign: str, reason: str) -> bool:
        child = self.children.get(campaign)
        if child is None or child.proc is None or child.proc.returncode is not None:
            return False
        log.info("stopping campaign %s: %s", campaign, reason)
        child.proc.send_signal(signal.SIGTERM)
        return True

    async def kick(self, campaign: str, account: str, reason: str) -> bool:
        return False  # the campaign's own server takes kicks on its own control queue

    # -- children ----------------------------------------------------------------------------------
    def command(self, spec: CampaignSpec, server_id: str) -> list[str]:
        cfg = self.cfg
        cmd = [
            sys.executable, "-m", "engine.cli", "serve", "--campaign", spec.campaign, "--game", spec.game,
            "--seed", str(spec.seed), "--max-players", str(spec.max_players), "--host", cfg.spawn_host,
            "--port", "0", "--data-dir", str(self.root), "--hub-prefix", cfg.redis_prefix, "--public-url", f"ws://{cfg.spawn_public_host}:{{port}}/",
            "--server-id", server_id,
        ]  # fmt: skip
        for key, value in spec.config.items():
            cmd += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
        return [*cmd, *cfg.spawn_args]

    def env(self) -> dict[str, str]:
        """The child's environment: the DSN and the Redis URL travel here, not in its command line,
        where any user of the machine could read a password in them (ps)."""
        return {**os.environ, "ARBITER_PG_DSN": self.cfg.pg_dsn, "ARBITER_HUB_REDIS": self.cfg.redis_url}

    async def _spawn(self, child: Child) -> None:
        cid = child.spec.campaign
        logs = self.root / "logs"
        try:
            logs.mkdir(parents=True, exist_ok=True)
            child.log_file = open(logs / f"{cid}.log", "ab")  # noqa: SIM115 - closed when the child exits
            child.proc = await asyncio.create_subprocess_exec(
                *self.command(child.spec, child.server_id), stdout=asyncio.subprocess.PIPE, stderr=child.log_file,
                stdin=asyncio.subprocess.DEVNULL, env=self.env(), start_new_session=True,
            )  # fmt: skip
            log.info("campaign %s: started arbiter serve (pid %d)", cid, child.proc.pid)
            port = await self._wait_ready(child)
            child.url = f"ws://{self.cfg.spawn_public_host}:{port}/"
            child.ready.set_result((child.url, child.server_id))
            assert child.proc.stdout is not None
            while await child.proc.stdout.readline():  # keep the pipe drained
                pass
            rc = await child.proc.wait()
            log.info("campaign %s: arbiter serve exited with %d", cid, rc)
        except Exception as exc:
            if not child.ready.done():
                child.ready.set_exception(PlacementError(f"arbiter serve did not start: {exc}"))
            log.warning("campaign %s: %s", cid, exc)
        finally:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
            if child.log_file is not None:
                child.log_file.close()
            if not child.ready.done():
                child.ready.set_exception(PlacementError("arbiter serve exited before it was ready"))
            self.children.pop(cid, None)

    async def _wait_ready(self, child: Child) -> int:
        assert child.proc is not None and child.proc.stdout is not None
        async with asyncio.timeout(self.cfg.placement_timeout_s):
            while True:
                line = await child.proc.stdout.readline()
                if not line:
                    rc = await child.proc.wait()
                    raise PlacementError(f"arbiter serve exited with {rc} before it was ready "
                                         f"(see {self.root / 'logs' / child.spec.campaign}.log)")  # fmt: skip
                m = READY_RE.search(line.decode("utf-8", "replace"))
                if m:
                    return int(m.group(1))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """SIGTERM every child, wait for them (then SIGKILL), leave the registry."""
        self._closing = True
        for child in list(self.children.values()):
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_GRACE_S)
        for child in list(self.children.values()):
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        with contextlib.suppress(*REDIS_DOWN):
            await self.registry.withdraw(self.record())


def _retrieve(fut: asyncio.Future[tuple[str, str]]) -> None:
    if not fut.cancelled():
        fut.exception()
