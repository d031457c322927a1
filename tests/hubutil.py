"""Test helpers for the hub: Redis (shared, with a random prefix; or a private redis-server), an
in-process hub on a free port, a small JSON client, a fake placement handler.

Redis: ARBITER_TEST_REDIS_URL (default redis://127.0.0.1:6379/0). Without a reachable Redis the hub
cases skip with the reason, unless ARBITER_REQUIRE_SERVICES=1 (CI), then they fail. Every test uses
its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from engine.security.auth import KeyRing
from hub.app import HubServer, open_hub
from hub.config import HubConfig
from hub.state import Hub
from persistence.redis_layout import RedisKeys, finish, open_redis
from persistence.redis_registry import CampaignLoad, CampaignSpec, Registry, ServerRecord, serve_control
from tests.pgutil import dsn

REDIS_URL = os.environ.get("ARBITER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RING = KeyRing.single("h" * 40)


def _unreachable(what: str, exc: BaseException) -> None:
    reason = f"{what} not reachable: {type(exc).__name__}: {exc}"
    if os.environ.get("ARBITER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (ARBITER_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def redis_prefix(url: str = REDIS_URL) -> AsyncIterator[str]:
    """A fresh key prefix in the shared Redis; its keys are deleted afterwards."""
    prefix = f"t{secrets.token_hex(4)}:"
    client = open_redis(url)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        _unreachable(f"Redis at {url}", exc)
    try:
        yield prefix
    finally:
        with contextlib.suppress(Exception):
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        await client.aclose()


@contextlib.asynccontextmanager
async def pg_schema(database: str) -> AsyncIterator[str]:
    """A fresh schema in the session database (the hub migrates it); dropped afterwards."""
    schema = f"hub_{secrets.token_hex(4)}"
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(dsn(database), timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def hub_config(pg: str, redis_url: str, prefix: str, **overrides: Any) -> HubConfig:
    """A test hub: any free port, argon2 cheap (tests only; the default and the benchmark use OWASP's)."""
    cfg = HubConfig(pg_dsn=pg, redis_url=redis_url, port=0, redis_prefix=prefix, argon2_time_cost=1,
                    argon2_memory_kib=256, placement_timeout_s=10.0, sweep_every_s=0.2,
                    revocation_poll_s=0.2)  # fmt: skip
    return replace(cfg, **overrides)


@contextlib.asynccontextmanager
async def running_hub(cfg: HubConfig, ring: KeyRing = RING) -> AsyncIterator[tuple[Hub, str]]:
    hub = await open_hub(cfg, ring)
    server = HubServer(hub)
    await server.start()
    try:
        yield hub, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def hub_env(pg_database: str, **overrides: Any) -> AsyncIterator[tuple[Hub, Api]]:
    """The common case: one hub on a fresh schema and prefix, and a client for it."""
    async with redis_prefix() as prefix, pg_schema(pg_database) as schema:
        cfg = hub_config(dsn(pg_database), REDIS_URL, prefix, pg_schema=schema, **overrides)
        async with running_hub(cfg) as (hub, base), Api(base) as api:
            yield hub, api


class Api:
    """A JSON client: `await api.call("POST", "/v1/...", body, token)` -> (status, parsed body)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, *, raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        data = raw if raw is not None else (None if body is None else _json(body))
        async with self.session.request(method, self.base + path, data=data, headers=h) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text

    async def register(self, handle: str, password: str = "correct horse battery") -> dict[str, Any]:
        body = {"email": f"{handle}@example.com", "handle": handle, "password": password}
        status, body = await self.call("POST", "/v1/auth/register", body)
        assert status == 201, body
        return dict(body)

    async def stream(self, token: str) -> aiohttp.ClientWebSocketResponse:
        ws = await self.session.ws_connect(self.base + "/v1/stream", headers={"Authorization": f"Bearer {token}"})
        hello = await ws.receive_json(timeout=5)
        assert hello["t"] == "hello", hello
        return ws


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


async def eventually(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0, step: float = 0.05) -> None:
    """Await `pred()` until it is true; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        assert loop.time() < deadline, f"condition not met within {timeout:.1f} s"
        await asyncio.sleep(step)


async def next_frame(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0, **match: Any
) -> dict[str, Any]:
    """The next frame of type `kind` whose fields match (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"no {kind} frame matching {match} within {timeout} s")
        frame = await ws.receive_json(timeout=left)
        if frame.get("t") == kind and all(frame.get(k) == v for k, v in match.items()):
            return dict(frame)


# -- a placement handler that starts nothing --------------------------------------------------------
class FakeServer:
    """Registers as a placement handler with `capacity` slots and 'starts' campaigns instantly: the
    record then lists them as running at `url`, with `players` per campaign (settable)."""

    def __init__(self, redis_url: str, prefix: str, server_id: str = "", capacity: int = 4, data: str = "fake:/data"):
        self.keys = RedisKeys(prefix)
        self.redis = open_redis(redis_url)
        self.blocking = open_redis(redis_url, blocking=2.0)
        self.registry = Registry(self.redis, self.keys)
        self.id = server_id or f"fake-{secrets.token_hex(3)}"
        self.capacity = capacity
        self.data = data
        self.campaigns: dict[str, CampaignLoad] = {}
        self.started: list[CampaignSpec] = []
        self.stopped: list[str] = []
        self.kicked: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:1/{self.id}"

    def record(self) -> ServerRecord:
        return ServerRecord(id=self.id, url=self.url, kind="host", accepts=True, capacity=self.capacity,
                            data=self.data, campaigns=dict(self.campaigns))  # fmt: skip

    async def beat(self) -> None:
        await self.registry.publish(self.record(), 30.0)

    async def start_campaign(self, spec: CampaignSpec) -> tuple[str, str]:
        self.started.append(spec)
        self.campaigns[spec.campaign] = CampaignLoad(max_players=spec.max_players, game=spec.game)
        await self.beat()
        return self.url, self.id

    async def stop_campaign(self, campaign: str, reason: str) -> bool:
        self.stopped.append(campaign)
        self.campaigns.pop(campaign, None)
        await self.registry.withdraw(ServerRecord(id=self.id, url="", kind="host", accepts=True, capacity=1,
                                                  data=self.data, campaigns={campaign: CampaignLoad()}))  # fmt: skip
        await self.beat()
        return True

    async def kick(self, campaign: str, account: str, reason: str) -> bool:
        self.kicked.append((campaign, account))
        return True

    async def __aenter__(self) -> FakeServer:
        await self.beat()
        self._task = asyncio.create_task(serve_control(self.redis, self.blocking, self.keys, self.id, self, self._stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await finish([self._task], self._stop, grace=3.0)
        await self.redis.aclose()
        await self.blocking.aclose()


# -- a private redis-server (for tests that stop and restart it) ------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own, on a free port; `stop()` / `start()` restart it (empty)."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            _unreachable("redis-server binary", FileNotFoundError("redis-server"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        try:
            while True:
                try:
                    await client.ping()
                    return
                except Exception:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    async def __aenter__(self) -> OwnRedis:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
