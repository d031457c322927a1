"""`arbiter` command line: serve, bots, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.security.fairplay.referee import FairPlayConfig

READY_PREFIX = "ARBITER_READY"
COMMANDS_GROUP = "arbiter.commands"  # entry points: callables that add a subcommand to the parser


def _loop_runner(use_uvloop: bool):  # type: ignore[no-untyped-def]
    if use_uvloop:
        import uvloop

        return uvloop.run
    return asyncio.run


def _fairplay_config(args: argparse.Namespace) -> FairPlayConfig:
    from engine.security.fairplay.conn_limit import ConnLimitConfig
    from engine.security.fairplay.policy import PolicyConfig
    from engine.security.fairplay.referee import FairPlayConfig

    policy = PolicyConfig(mode=args.fairplay, warn_at=args.warn_at, kick_at=args.kick_at, ban_at=args.ban_at,
                          ban_s=args.ban_seconds)  # fmt: skip
    conn = ConnLimitConfig(rate=args.ip_conn_rate, burst=args.ip_conn_burst, max_open=args.ip_max_open,
                           max_unauth=args.ip_max_unauth, loopback=args.ip_limit_loopback)  # fmt: skip
    return FairPlayConfig(policy=policy, conn=conn)


def _parse_kv(items: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not _:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def _webrtc_config(args: argparse.Namespace) -> Any:
    from engine.webrtc.relay import WebRtcConfig, turn_secret_from_env

    if args.webrtc_workers < 0:
        raise ValueError("--webrtc-workers must be 0 or more")
    secret = turn_secret_from_env()
    if args.turn_url and not secret:
        raise ValueError("--turn-url needs the TURN secret in ARBITER_TURN_SECRET (coturn's static-auth-secret)")
    return WebRtcConfig(workers=args.webrtc_workers, host_ips=tuple(args.webrtc_ip), turn_urls=tuple(args.turn_url),
                        turn_secret=secret, turn_ttl=args.turn_ttl, voice_radius=args.voice_radius)  # fmt: skip


def _server_config(args: argparse.Namespace, cmd: str) -> Any:
    """The ServerConfig both `serve` and `host` build from their common options (a host's is every
    campaign's default), or an exit code after a one-line error."""
    from engine.config import ServerConfig
    from engine.relocation import ShipConfig

    cfg = ServerConfig(
        game=args.game, campaign=args.campaign if cmd == "serve" else "default", seed=args.seed, host=args.host,
        port=args.port, data_dir=args.data_dir, durability=args.durability, pg_dsn=args.pg,
        replication=args.replication, aoi_radius=args.aoi_radius, snapshot_budget=args.snapshot_budget,
        snapshot_every_s=args.snapshot_every if args.snapshot_every is not None else (10.0 if cmd == "serve" else 30.0),
        tick_rate=args.tick_rate, send_rate=args.send_rate,
        hash_every=args.hash_every if args.hash_every is not None else (60 if cmd == "serve" else 300),
        game_config=_parse_kv(args.set), fairplay=_fairplay_config(args),
        admin_port=None if args.admin_port < 0 else args.admin_port, admin_host=args.admin_host,
        upgrade_timeout=args.upgrade_timeout, handshake_timeout=args.hello_timeout,
        max_connections=args.max_connections, max_unauth=args.max_unauth, account_conflict=args.account_conflict,
        metrics_on_game_port=args.metrics_on_game_port,
        ship=ShipConfig(interval_s=args.ship_every, snapshot_every_s=args.ship_snapshot_every, ack=args.ack_after,
                        restore_timeout_s=args.restore_timeout),
        drain_timeout=args.drain_timeout, hub_url=args.hub_url, watch_public=args.watch_public,
    )  # fmt: skip
    if args.ack_after == "pg" and not (cfg.pg_dsn and cfg.data_dir):
        print(f"arbiter {cmd}: --ack-after pg needs --pg (or $ARBITER_PG_DSN) and a --data-dir", file=sys.stderr)
        return 2
    try:
        cfg.webrtc = _webrtc_config(args)
    except ValueError as exc:
        print(f"arbiter {cmd}: {exc}", file=sys.stderr)
        return 2
    if args.max_players:
        cfg.game_config = {**dict(cfg.game_config), "max_players": args.max_players}
    return cfg


def _key_ring(cmd: str) -> Any:
    """The join-token keys from the environment (None: tokens off), or an exit code after an error."""
    from engine.security.auth import KeyConfigError, KeyRing

    try:
        return KeyRing.from_optional_env()
    except KeyConfigError as exc:
        print(f"arbiter {cmd}: {exc}", file=sys.stderr)
        return 2


def _run_server(main: Callable[[], Any], args: argparse.Namespace, cmd: str) -> int:
    from engine.recovery import RecoveryError
    from engine.relocation import RestoreError
    from persistence.campaign_store import CampaignLockedError
    from persistence.journal_codec import JournalFormatError
    from sim.spec import ConfigError

    # The store's writer thread shares the GIL with the tick. `serve`: hand it back within 0.5 ms, not
    # 5 ms, so a commit (and so an acknowledgement) is not held up. `host`: its stores commit every
    # 100 ms (--commit-every) and the loop has many campaigns to run: fewer forced handoffs.
    sys.setswitchinterval(0.0005 if cmd == "serve" else 0.005)
    try:
        return _run_serve(main, args)
    # a campaign to restore while PostgreSQL is unreachable; a journal of another format; ...
    except (RestoreError, ConfigError, JournalFormatError, CampaignLockedError, RecoveryError) as exc:
        print(f"arbiter {cmd}: {exc}", file=sys.stderr)
        return 2


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.security.auth import TokenVerifier
    from engine.server import open_server

    cfg = _server_config(args, "serve")
    if isinstance(cfg, int):
        return cfg
    ring = _key_ring("serve")
    if isinstance(ring, int):
        return ring
    verifier = TokenVerifier(ring, cfg.campaign) if ring is not None else None

    async def main() -> None:
        from engine.heap import freeze_heap
        from engine.hub_link import start_hub_link

        server = await open_server(cfg, verifier)
        await server.start()
        freeze_heap()  # its one campaign stays loaded: shorter full collections for the process's life
        assert server.host is not None
        link = await start_hub_link(server.host, args)
        server.install_signal_handlers()
        print(f"{READY_PREFIX} ws://{cfg.host}:{server.port}/ pid={os.getpid()}", flush=True)
        await server.run()
        if link is not None:
            await link.close()

    return _run_server(main, args, "serve")


def cmd_host(args: argparse.Namespace) -> int:
    from engine.heap import freeze_heap, warm_kernels
    from engine.host import CampaignSpec, Host, HostConfig, PlacementRefusedError
    from engine.routing import valid_campaign_id

    cfg = _server_config(args, "host")
    if isinstance(cfg, int):
        return cfg
    ring = _key_ring("host")
    if isinstance(ring, int):
        return ring
    bad = [c for c in args.campaign if not valid_campaign_id(c)]
    if bad or args.capacity < 1 or args.hibernate_after < 0 or not 0 < args.campaign_share <= 1 or not (
        0 <= args.commit_every <= 5
    ):
        what = (f"invalid campaign id {bad[0]!r} (letters, digits, . _ -)" if bad else
                "--capacity must be at least 1, --hibernate-after 0 or more, --campaign-share in (0, 1], "
                "--commit-every in [0, 5]")  # fmt: skip
        print(f"arbiter host: {what}", file=sys.stderr)
        return 2
    hcfg = HostConfig(name=args.name, capacity=args.capacity, hibernate_after_s=args.hibernate_after,
                      phases=args.phases, share=args.campaign_share, public_url=args.public_url,
                      commit_every_s=args.commit_every)  # fmt: skip

    async def main() -> None:
        from engine.hub_link import start_hub_link

        host = Host(cfg, hcfg, ring=ring)
        await host.start()
        await asyncio.to_thread(warm_kernels, cfg.game, dict(cfg.game_config))
        freeze_heap()  # before any campaign loads: they may be unloaded later
        for cid in args.campaign:
            try:
                await host.start_campaign(CampaignSpec(cid, cfg.game, cfg.seed, dict(cfg.game_config)))
            except PlacementRefusedError as exc:
                logging.getLogger("arbiter.host").error("campaign %s not started: %s", cid, exc)
        link = await start_hub_link(host, args)
        host.install_signal_handlers()
        print(f"{READY_PREFIX} ws://{cfg.host}:{host.port}/ pid={os.getpid()}", flush=True)
        await host.run()
        if link is not None:
            await link.close()

    return _run_server(main, args, "host")


def _run_serve(main: Callable[[], Any], args: argparse.Namespace) -> int:
    profile_to = os.environ.get("ARBITER_PROFILE")
    if profile_to:
        # Where does the time go: a cProfile of the whole serve run, written at shutdown.
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            _loop_runner(not args.no_uvloop)(main())
        finally:
            prof.disable()
            prof.dump_stats(profile_to)
        return 0
    _loop_runner(not args.no_uvloop)(main())
    return 0


def cmd_bots(args: argparse.Namespace) -> int:
    from engine.security.auth import KeyConfigError, KeyRing, TokenIssuer
    from engine.tools.bots import BotConfig, run_bots

    try:
        ring = KeyRing.from_optional_env()
    except KeyConfigError as exc:
        print(f"arbiter bots: {exc}", file=sys.stderr)
        return 2
    cfg = BotConfig(
        token_factory=token_factory(TokenIssuer(ring)) if ring is not None else None,
        url=args.url,
        campaign=args.campaign,
        game=args.game,
        count=args.count,
        duration=args.duration,
        input_rate=args.input_rate,
        full_decoders=args.full_decoders,
        seed=args.seed,
    )

    async def main() -> int:
        report = await run_bots(cfg)
        d = report.as_dict()
        if args.json:
            print(json.dumps(d), flush=True)
        else:
            for k, v in d.items():
                print(f"{k:>24}: {v}")
        if not report.connected and report.connect_failures:
            why = "; ".join(f"{n} x {reason}" for reason, n in report.connect_errors.items())
            print(f"arbiter bots: no bot could join ({why})", file=sys.stderr)
            return 1
        return 0

    return int(_loop_runner(not args.no_uvloop)(main()))


def token_factory(issuer: Any) -> Callable[[str, str], str]:
    """(account, campaign) -> a fresh join token (a token id is refused once used)."""

    def make(account: str, campaign: str) -> str:
        return str(issuer.issue(account, campaign, name=account, ttl=600))

    return make


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.tools.demo import run_demo

    return _loop_runner(True)(run_demo(args))


def _add_server_args(s: argparse.ArgumentParser, games: list[str]) -> None:
    """The options `serve` and `host` share (for a host, every campaign's defaults)."""
    from engine.hub_link import add_hub_link_args
    from sim.games import DEFAULT_GAME

    s.add_argument("--game", default=DEFAULT_GAME, choices=games)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    s.add_argument("--data-dir", default="data", help='campaign data root; "" keeps it in memory only')
    s.add_argument("--durability", default="normal", choices=("normal", "full"))
    s.add_argument(
        "--pg",
        default=os.environ.get("ARBITER_PG_DSN", ""),
        metavar="DSN",
        help="PostgreSQL for progress and the ledger (default $ARBITER_PG_DSN; off when empty)",
    )
    s.add_argument("--replication", default="delta", choices=("delta", "full"))
    s.add_argument("--aoi-radius", type=float, default=None, help="view radius; 0 = whole world")
    s.add_argument("--snapshot-budget", type=int, default=1400, help="max bytes per delta snapshot (0: none)")
    s.add_argument("--snapshot-every", type=float, default=None,
                   help="seconds between world snapshots (default 10 for serve, 30 for host)")  # fmt: skip
    s.add_argument("--hash-every", type=int, default=None, metavar="N",
                   help="record the world's state hash in the journal every N ticks (replay checks it; "
                        "default 60 for serve, 300 for host: hashing a world costs up to a millisecond)")  # fmt: skip
    s.add_argument("--tick-rate", type=int, default=60)
    s.add_argument("--send-rate", type=int, default=20)
    s.add_argument("--max-players", type=int, default=0, help="the game's max_players (0: the game's default)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="game config")
    s.add_argument("--no-uvloop", action="store_true")
    w = s.add_argument_group("browser pages (docs/web.md)")
    w.add_argument("--hub-url", default=os.environ.get("ARBITER_HUB_URL", ""),
                   help="the hub /play logs in through (default $ARBITER_HUB_URL; none: guests, tokens)")  # fmt: skip
    w.add_argument("--watch-public", action="store_true", help="/watch without an admin token")
    f = s.add_argument_group("fair play (docs/fairplay.md)")
    f.add_argument("--fairplay", default="enforce", choices=("enforce", "observe", "off"),
                   help="observe: score and audit, never kick or ban")  # fmt: skip
    f.add_argument("--admin-port", type=int, default=-1, help="admin API port (-1: off, 0: any free port)")
    w = s.add_argument_group("WebRTC (docs/webrtc.md)")
    w.add_argument("--webrtc-workers", type=int, default=0, help="relay worker processes (0: WebSocket only)")
    w.add_argument("--webrtc-ip", action="append", default=[], help="address for host candidates (repeatable)")
    w.add_argument("--turn-url", action="append", default=[], help="turn:host:port?transport=udp (repeatable)")
    w.add_argument("--turn-ttl", type=int, default=3600, help="seconds a TURN credential stays valid")
    w.add_argument("--voice-radius", type=float, default=None, help="proximity voice radius (default: view)")
    f.add_argument("--admin-host", default="127.0.0.1")
    f.add_argument("--metrics-on-game-port", action="store_true",
                   help="serve /metrics on the public game port too (default: the admin listener only)")  # fmt: skip
    f.add_argument("--warn-at", type=float, default=10.0)
    f.add_argument("--kick-at", type=float, default=30.0)
    f.add_argument("--ban-at", type=float, default=60.0)
    f.add_argument("--ban-seconds", type=float, default=3600.0)
    f.add_argument("--ip-conn-rate", type=float, default=20.0, help="new connections/s per IP (0: no limit)")
    f.add_argument("--ip-conn-burst", type=int, default=100)
    f.add_argument("--ip-max-open", type=int, default=0, help="open connections per IP (0: no limit)")
    f.add_argument("--ip-limit-loopback", action="store_true", help="apply the per-IP limits to 127.0.0.1 too")
    add_hub_link_args(s)
    f.add_argument("--ip-max-unauth", type=int, default=16, help="connections per IP not yet playing (0: no limit)")
    g = s.add_argument_group("the door (docs/security.md)")
    g.add_argument("--upgrade-timeout", type=float, default=5.0, help="seconds from TCP accept to the upgrade")
    g.add_argument("--hello-timeout", type=float, default=5.0, help="seconds from the upgrade to the hello")
    g.add_argument("--max-connections", type=int, default=4096, help="open connections, every phase")
    g.add_argument("--max-unauth", type=int, default=1024, help="connections not yet playing, every address")
    g.add_argument("--account-conflict", default="takeover", choices=("takeover", "refuse"),
                   help="a second connection of a playing account takes its ship over, or is refused")  # fmt: skip
    r = s.add_argument_group("relocation through PostgreSQL (docs/relocation.md; needs --pg and a --data-dir)")
    r.add_argument("--ship-every", type=float, default=1.0, metavar="S",
                   help="ship the journal to PostgreSQL every S seconds (0: no shipping, no relocation)")  # fmt: skip
    r.add_argument("--ship-snapshot-every", type=float, default=30.0, metavar="S",
                   help="ship the newest world snapshot every S seconds")  # fmt: skip
    r.add_argument("--ack-after", default="disk", choices=("disk", "pg"),
                   help="pg: acknowledge an input only once PostgreSQL has it (survives machine loss)")  # fmt: skip
    r.add_argument("--restore-timeout", type=float, default=15.0, metavar="S",
                   help="with no local data, how long to wait for PostgreSQL before giving up")  # fmt: skip
    r.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                   help="at SIGTERM, how long PostgreSQL may take to receive the final journal")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from sim.games import DEFAULT_GAME
    from sim.registry import game_names

    games = game_names()  # every installed `arbiter.games` entry point
    p = argparse.ArgumentParser(prog="arbiter", description="Arbiter authoritative game server")
    p.add_argument("--log-level", default=os.environ.get("ARBITER_LOG", "INFO"))
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run one campaign server")
    _add_server_args(s, games)
    s.add_argument("--campaign", default="default")
    s.set_defaults(func=cmd_serve)

    h = sub.add_parser("host", help="run many campaigns in one process (docs/hosting.md)")
    _add_server_args(h, games)
    g = h.add_argument_group("campaigns (docs/hosting.md)")
    g.add_argument("--campaign", action="append", default=[], metavar="ID",
                   help="start this campaign at boot (repeatable; --game, --seed, --set are theirs)")  # fmt: skip
    g.add_argument("--capacity", type=int, default=100, help="campaigns loaded at once (hibernated ones do not count)")
    g.add_argument("--hibernate-after", type=float, default=60.0, metavar="S",
                   help="unload a campaign nobody was connected to for S seconds (0: never)")  # fmt: skip
    g.add_argument("--phases", type=int, default=16, help="slots of the tick period the campaigns are spread over")
    g.add_argument("--commit-every", type=float, default=0.1, metavar="S",
                   help="each campaign's journal commits at most every S seconds (acks wait for it)")  # fmt: skip
    g.add_argument("--campaign-share", type=float, default=0.5, metavar="F",
                   help="at most this fraction of the loop per campaign; over it, its ticks are throttled")  # fmt: skip
    g.add_argument("--name", default=os.environ.get("ARBITER_HOST_NAME", "host"),
                   help="the host's name: the audience of admin tokens for its own routes")  # fmt: skip
    h.set_defaults(func=cmd_host)

    b = sub.add_parser("bots", help="run N bot players against a server")
    b.add_argument("--url", default="ws://127.0.0.1:8765/")
    b.add_argument("--count", type=int, default=10)
    b.add_argument("--duration", type=float, default=10.0)
    b.add_argument("--input-rate", type=float, default=20.0)
    b.add_argument("--full-decoders", type=int, default=8)
    b.add_argument("--seed", type=int, default=12345)
    b.add_argument("--campaign", default=None, help="campaign the minted join tokens name (default: the server's)")
    b.add_argument("--game", default=None, choices=games, help="whose brain the bots use (default: the server's game)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--no-uvloop", action="store_true")
    b.set_defaults(func=cmd_bots)

    d = sub.add_parser("demo", help="start a server and bots in one command")
    d.add_argument("--game", default=DEFAULT_GAME, choices=games)
    d.add_argument("--bots", type=int, default=20)
    d.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until Ctrl-C")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--port", type=int, default=0)
    d.add_argument("--data-dir", default="")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)

    from engine.tools.replay import add_replay_parser
    from engine.tools.token_cli import add_token_parser

    add_replay_parser(sub)
    add_token_parser(sub)
    # Commands of other programs that share the `arbiter` name (the hub, installed plugins) register
    # themselves through the `arbiter.commands` entry points, so a game server never imports them.
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
