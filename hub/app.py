"""Build and run a hub: open its stores, wire its routes, start and stop its background parts.

    hub = await open_hub(cfg, keyring)      # PostgreSQL (migrated), Redis clients, services
    server = HubServer(hub); await server.start()   # HTTP + WebSocket on cfg.host:cfg.port
    ...
    await server.close()

PostgreSQL must answer at start (the hub has nothing to serve without it); Redis may be down: the
endpoints that need it answer 503 until it is back, and the bus reconnects on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from engine.security.auth import KeyRing, TokenIssuer
from hub import chat, routes_accounts, routes_boards, routes_campaigns, routes_reports, routes_social
from hub.config import HubConfig
from hub.http import cors, errors, ok
from hub.metrics import HubMetrics
from hub.placement import Placement
from hub.sessions import AccessTokens, Passwords, RevokedSessions
from hub.spawner import LocalSpawner
from hub.state import HUB_KEY, Hub, Limits
from hub.stream import Streams
from hub.upkeep import Upkeep
from persistence.pg_fairplay import PgFairplayStore
from persistence.pg_hub_accounts import AccountStore
from persistence.pg_hub_campaigns import CampaignStore
from persistence.pg_hub_social import SocialStore
from persistence.pg_migrations import check_schema_name
from persistence.pg_pool import LazyPool
from persistence.redis_bus import Bus
from persistence.redis_layout import REDIS_DOWN, RedisKeys, finish, open_redis
from persistence.redis_leaderboard import Leaderboards
from persistence.redis_limits import Backoff, FixedWindow
from persistence.redis_presence import Presence
from persistence.redis_registry import Registry
from persistence.redis_seats import Seats

log = logging.getLogger("arbiter.hub")

PG_START_TIMEOUT_S = 30.0


async def open_pool(cfg: HubConfig) -> tuple[LazyPool, asyncpg.Pool]:
    """The hub's pool (search_path = its schema), migrated to the newest version."""
    schema = check_schema_name(cfg.pg_schema)

    async def factory() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            cfg.pg_dsn, min_size=1, max_size=16, timeout=5.0, command_timeout=10.0,
            server_settings={"search_path": schema, "application_name": "arbiter-hub"},
        )  # fmt: skip
        assert pool is not None
        return pool

    lazy = LazyPool(None, factory, schema)
    return lazy, await asyncio.wait_for(lazy.get(), PG_START_TIMEOUT_S)


async def open_hub(cfg: HubConfig, keyring: KeyRing) -> Hub:
    lazy, pool = await open_pool(cfg)
    keys = RedisKeys(cfg.redis_prefix)
    redis = open_redis(cfg.redis_url)
    blocking = open_redis(cfg.redis_url, blocking=cfg.placement_timeout_s + 5.0)
    revoked = RevokedSessions(cfg.access_ttl_s + 60.0)
    hub_id = cfg.hub_id or f"hub-{socket.gethostname()}-{secrets.token_hex(4)}"
    limits = Limits(
        login_ip=FixedWindow(redis, keys, "login-ip", cfg.login_failures_per_ip, cfg.login_window_s),
        login_account=Backoff(
            redis,
            keys,
            "login-acct",
            free=cfg.account_free_failures,
            base_s=cfg.account_backoff_base_s,
            cap_s=cfg.account_backoff_cap_s,
            window_s=cfg.login_window_s,
        ),
        register_ip=FixedWindow(redis, keys, "register-ip", cfg.registrations_per_ip, cfg.registration_window_s),
        chat=FixedWindow(redis, keys, "chat", cfg.chat_per_window, cfg.chat_window_s),
        social=FixedWindow(redis, keys, "social", cfg.social_per_window, cfg.social_window_s),
    )
    hub = Hub(
        cfg=cfg, hub_id=hub_id, keys=keys, redis=redis, blocking=blocking, pool=pool,
        accounts=AccountStore(pool), campaigns=CampaignStore(pool), social=SocialStore(pool),
        fairplay=PgFairplayStore(pool_factory=lazy.get, schema=lazy.schema, run_migrations=False),
        passwords=Passwords(cfg), revoked=revoked, access=AccessTokens(keyring, cfg.access_ttl_s, revoked),
        join_tokens=TokenIssuer(keyring), limits=limits, presence=Presence(redis, keys), bus=Bus(redis, keys),
        registry=Registry(redis, keys), boards=Leaderboards(redis, keys),
        seats=Seats(redis, keys, stale_s=cfg.waitlist_stale_s), metrics=HubMetrics(),
    )  # fmt: skip
    hub.streams = Streams(hub)
    hub.placement = Placement(hub)
    hub.upkeep = Upkeep(hub)
    if cfg.spawn_local:
        hub.spawner = LocalSpawner(cfg, redis, blocking, keys, f"spawner-{hub_id}")
    return hub


async def _health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    redis_ok = True
    try:
        await hub.redis.ping()
    except REDIS_DOWN:
        redis_ok = False
    return ok({"status": "ok", "hub": hub.hub_id, "redis": redis_ok, "bus": hub.bus.connected,
               "streams": len(hub.streams.conns)})  # fmt: skip


async def _metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.Response(body=hub.metrics.render(), headers={"Content-Type": hub.metrics.content_type})


async def _background(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    bus_ready = asyncio.Event()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(hub.bus.listen(hub.streams.on_event, hub.streams.resync, stop=stop, ready=bus_ready)),
        asyncio.create_task(hub.streams.presence_loop(stop)),
        asyncio.create_task(hub.upkeep.run(stop)),
    ]
    if hub.spawner is not None:
        tasks.append(asyncio.create_task(hub.spawner.run(stop)))
    with contextlib.suppress(TimeoutError):  # Redis down at start: serve anyway, the bus keeps trying
        await asyncio.wait_for(bus_ready.wait(), 2.0)
    yield
    await hub.streams.close()
    if hub.spawner is not None:
        await hub.spawner.close()
    await finish(tasks, stop, grace=3.0)


def make_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=hub.cfg.max_body, middlewares=[cors, errors])
    app[HUB_KEY] = hub
    for module in (routes_accounts, routes_campaigns, chat, routes_social, routes_boards, routes_reports):
        app.add_routes(module.routes)
    app.router.add_get("/v1/stream", hub.streams.handle)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_background)
    return app


async def close_hub(hub: Hub) -> None:
    await hub.fairplay.close(2.0)
    hub.passwords.close()
    for client in (hub.redis, hub.blocking):
        with contextlib.suppress(*REDIS_DOWN):
            await client.aclose()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(hub.pool.close(), 5.0)


class HubServer:
    """A hub listening on cfg.host:cfg.port (0 = any free port; `port` says which)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.app = make_app(hub)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        self.port = hub.cfg.port

    async def start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.hub.cfg.host, self.hub.cfg.port, backlog=1024)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.hub.cfg.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()
        await close_hub(self.hub)
