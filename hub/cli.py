"""`arbiter hub`: run the hub (its arguments live here; engine/cli.py only registers them).

    arbiter hub --pg DSN --redis URL --port P [--spawn-local] [...]

Prints `ARBITER_HUB_READY http://HOST:PORT/ pid=N` once it serves; SIGINT/SIGTERM stop it
gracefully (streams closed, spawned servers stopped). `--grant-admin HANDLE` makes an account an
admin and exits. Every mistake is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from hub.config import OWASP_MEMORY_KIB, OWASP_PARALLELISM, OWASP_TIME_COST, HubConfig

READY_PREFIX = "ARBITER_HUB_READY"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def add_hub_parser(sub: Any) -> argparse.ArgumentParser:
    h: argparse.ArgumentParser = sub.add_parser("hub", help="run the hub: accounts, campaigns, chat, ... (docs/hub.md)")
    h.add_argument("--pg", default=os.environ.get("ARBITER_PG_DSN", ""), metavar="DSN",
                   help="PostgreSQL (default $ARBITER_PG_DSN)")  # fmt: skip
    h.add_argument("--redis", default=os.environ.get("ARBITER_REDIS_URL", DEFAULT_REDIS), metavar="URL",
                   help="Redis (default $ARBITER_REDIS_URL or %(default)s)")  # fmt: skip
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on start)")
    h.add_argument("--pg-schema", default="public")
    h.add_argument("--redis-prefix", default=os.environ.get("ARBITER_REDIS_PREFIX", "arbiter:"),
                   help="Redis key prefix (default $ARBITER_REDIS_PREFIX or %(default)s)")  # fmt: skip
    h.add_argument("--games", default="", help="comma-separated games campaigns may use (default: any)")
    h.add_argument("--max-players", type=int, default=50, help="largest max_players a campaign may ask for")
    h.add_argument("--trust-forwarded", action="store_true", help="client address from X-Forwarded-For")
    h.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="browser origin allowed to call the API (repeatable; default: any)")  # fmt: skip
    h.add_argument("--grant-admin", metavar="HANDLE", help="make this account an admin, then exit")
    h.add_argument("--no-uvloop", action="store_true")
    s = h.add_argument_group("spawning game servers on this machine")
    s.add_argument("--spawn-local", action="store_true", help="start `arbiter serve` processes for campaigns")
    s.add_argument("--spawn-capacity", type=int, default=8, help="campaigns this hub may run at once")
    s.add_argument("--spawn-data-dir", default="data")
    s.add_argument("--spawn-host", default="127.0.0.1", help="address the spawned servers bind")
    s.add_argument("--spawn-public-host", default="127.0.0.1", help="host in the URLs players get")
    s.add_argument("--spawn-arg", action="append", default=[], metavar="ARG", help="extra `arbiter serve` argument")
    lim = h.add_argument_group("limits")
    lim.add_argument("--login-failures", type=int, default=5, help="failed logins per IP per window")
    lim.add_argument("--login-window", type=float, default=3600.0, help="seconds")
    lim.add_argument("--registrations", type=int, default=10, help="new accounts per IP per hour")
    lim.add_argument("--chat-rate", type=int, default=10, help="chat messages per sender per 10 s")
    a = h.add_argument_group("argon2id (defaults: OWASP)")
    a.add_argument("--argon2-time-cost", type=int, default=OWASP_TIME_COST)
    a.add_argument("--argon2-memory-kib", type=int, default=OWASP_MEMORY_KIB)
    a.add_argument("--argon2-parallelism", type=int, default=OWASP_PARALLELISM)
    h.set_defaults(func=cmd_hub)
    return h


def _fail(message: str) -> int:
    print(f"arbiter hub: {message}", file=sys.stderr)
    return 2


def config(args: argparse.Namespace) -> HubConfig:
    return HubConfig(
        pg_dsn=args.pg, redis_url=args.redis, host=args.host, port=args.port, pg_schema=args.pg_schema,
        redis_prefix=args.redis_prefix, games=tuple(g for g in args.games.split(",") if g),
        max_players=args.max_players, trust_forwarded=args.trust_forwarded, spawn_local=args.spawn_local,
        cors_origins=tuple(args.cors_origin) or ("*",),
        spawn_capacity=args.spawn_capacity, spawn_data_dir=args.spawn_data_dir, spawn_host=args.spawn_host,
        spawn_public_host=args.spawn_public_host, spawn_args=tuple(args.spawn_arg),
        login_failures_per_ip=args.login_failures, login_window_s=args.login_window,
        registrations_per_ip=args.registrations, chat_per_window=args.chat_rate,
        argon2_time_cost=args.argon2_time_cost, argon2_memory_kib=args.argon2_memory_kib,
        argon2_parallelism=args.argon2_parallelism,
    )  # fmt: skip


def cmd_hub(args: argparse.Namespace) -> int:
    from engine.security.auth import KeyConfigError, KeyRing
    from persistence.pg_migrations import check_schema_name
    from persistence.redis_layout import check_prefix

    if not args.pg:
        return _fail("--pg DSN is required (or set ARBITER_PG_DSN)")
    try:
        check_schema_name(args.pg_schema)
        check_prefix(args.redis_prefix)
    except ValueError as exc:
        return _fail(str(exc))
    if args.argon2_time_cost < 1 or args.argon2_memory_kib < 8 or args.argon2_parallelism < 1:
        return _fail("argon2 costs must be positive (memory at least 8 KiB)")
    if not 2 <= args.max_players <= 1000 or args.spawn_capacity < 1:
        return _fail("--max-players must be in 2..1000 and --spawn-capacity at least 1")
    try:
        keyring = KeyRing.from_env()
    except KeyConfigError as exc:
        return _fail(f"{exc} (the hub signs access and join tokens with the game servers' keys)")
    cfg = config(args)
    runner: Any = asyncio.run
    if not args.no_uvloop:
        import uvloop

        runner = uvloop.run
    try:
        return int(runner(_main(cfg, keyring, args.grant_admin)))
    except _StartError as exc:
        return _fail(str(exc))


class _StartError(Exception):
    pass


async def _main(cfg: HubConfig, keyring: Any, grant_admin: str | None) -> int:
    from hub.app import HubServer, open_hub, open_pool
    from persistence.pg_hub_accounts import AccountStore

    try:
        if grant_admin:
            _, pool = await open_pool(cfg)
            account = await AccountStore(pool).by_handle(grant_admin)
            if account is None or not await AccountStore(pool).set_role(account.account_id, "admin"):
                await pool.close()
                raise _StartError(f"no account with handle {grant_admin!r}")
            await pool.close()
            print(f"{account.handle} ({account.account_id}) is an admin", flush=True)
            return 0
        hub = await open_hub(cfg, keyring)
    except (OSError, TimeoutError) as exc:
        raise _StartError(f"cannot reach PostgreSQL at the --pg DSN ({type(exc).__name__}: {exc})") from None
    except Exception as exc:
        if type(exc).__module__.startswith("asyncpg"):
            raise _StartError(f"PostgreSQL refused the hub ({type(exc).__name__}: {exc})") from None
        raise
    server = HubServer(hub)
    try:
        await server.start()
    except OSError as exc:
        await server.close()
        raise _StartError(f"cannot listen on {cfg.host}:{cfg.port} ({exc.strerror})") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX} http://{cfg.host}:{server.port}/ pid={os.getpid()} id={hub.hub_id}", flush=True)
    await stop.wait()
    await server.close()
    return 0
