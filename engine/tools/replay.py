"""`arbiter replay`: re-simulate a campaign headlessly, bit for bit, from its data directory.

    arbiter replay DATA_DIR_OR_FILE [--verify] [--from-tick T] [--to-tick T] [--export out.jsonl]
                   [--violations] [--json]

From the genesis (the seed) by default (for a campaign restored from PostgreSQL, whose kept history
starts at a shipped snapshot: from that snapshot), or from the newest snapshot at or before `--from-tick`.
`--verify` checks every state hash recorded in the journal and every snapshot met on the way;
on the first mismatch it prints the tick and exits with status 1. `--violations` lists what the
validators flag on the way (they are sim kernels, so a replay raises exactly the violations the live
server saw): the evidence behind a fair-play decision, whose audit entry names the tick range.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import IO, Any

from engine.campaign import Campaign, ReplayDivergenceError, TickResult
from engine.recovery import (
    JournalScan,
    RecoveryError,
    campaign_meta,
    open_for_replay,
    replay_records,
    resolve_store_path,
    restore_snapshot,
)
from engine.security.fairplay.kinds import kind_name
from persistence.campaign_reader import format_hash
from persistence.campaign_store import CampaignLockedError, CampaignStore
from persistence.journal_codec import JournalFormatError
from sim.statehash import state_hash


def summary_fields(campaign: Campaign) -> list[str]:
    """What a tick summary shows of each player: the replicated fields, then the durable ones."""
    game = campaign.game
    fields = [n for n in game.record_dtype.names or () if n != "id"]
    return fields + [f for f in (*game.resources, *game.durable) if f not in fields]


def tick_summary(campaign: Campaign, result: TickResult) -> dict[str, Any]:
    """Players, positions, balances and events of one tick, for analysis (one JSON line)."""
    players = []
    for key, eid in sorted(campaign.accounts.items()):
        p: dict[str, Any] = {"account": key, "eid": eid}
        for f in summary_fields(campaign):
            v = campaign.player_value(eid, f)
            if v is not None:
                p[f] = v
        players.append(p)
    return {
        "tick": result.tick,
        "players": players,
        "inputs_accepted": result.accepted,
        "inputs_refused": result.refused,
        "events": {str(e): evs for e, evs in result.events.items()},
    }


def run_replay(
    path: str,
    *,
    verify: bool = False,
    from_tick: int | None = None,
    to_tick: int | None = None,
    export: IO[str] | None = None,
    violations: bool = False,
) -> dict[str, Any]:
    data_dir, campaign_id = resolve_store_path(path)
    flagged: list[dict[str, Any]] = []
    store = CampaignStore.open(data_dir, campaign_id)
    try:
        meta = campaign_meta(store)
        if not meta:
            raise RecoveryError(f"{path}: no campaign metadata (not a campaign created by `arbiter serve`)")
        campaign = open_for_replay(store, meta, campaign_id)
        if from_tick is not None:
            start = restore_snapshot(campaign, store, max_tick=from_tick)
        else:
            start = _history_start(campaign, store)
        snapshots = {t: None for t in store.snapshot_ticks()}
        snap_hashes: dict[int, str] = {}
        if verify:
            for t in snapshots:
                s = store.latest_snapshot(max_tick=t)
                if s is not None and s.tick == t:
                    snap_hashes[t] = s.state_hash
        # Every ship in the world at the start, plus every join on the way (accounts only grow by joins).
        players: set[str] = set(campaign.accounts)
        checked_snaps = 0
        first_bad: int | None = None

        def on_joins(joins: list[tuple[int, str]]) -> None:
            players.update(key for _, key in joins)

        def on_tick(result: TickResult) -> None:
            nonlocal checked_snaps
            if verify and result.tick in snap_hashes:
                if format_hash(state_hash(campaign.world)) != snap_hashes[result.tick]:
                    raise RecoveryError(f"state diverges at tick {result.tick}: snapshot hash differs")
                checked_snaps += 1
            if from_tick is not None and result.tick < from_tick:
                return
            if violations and result.violations:
                owners = {e: k for k, e in campaign.accounts.items()}
                flagged.extend(
                    {"tick": result.tick, "kind": k, "name": kind_name(k), "eid": e, "account": owners.get(e),
                     "value": value, "limit": limit}
                    for k, e, value, limit in result.violations
                )  # fmt: skip
            if export is not None:
                export.write(json.dumps(tick_summary(campaign, result), separators=(",", ":")) + "\n")

        # Only ticks that can meet a snapshot to check, an export or violations need the per-tick callback.
        needs_tick = export is not None or bool(snap_hashes) or violations
        reader = JournalScan(store, start, to_tick)
        t0 = time.perf_counter()
        error = None
        try:
            ticks, hashes = replay_records(
                campaign,
                reader,
                verify=verify,
                to_tick=to_tick,
                on_tick=on_tick if needs_tick else None,
                on_joins=on_joins,
                group_events=export is not None,
            )
        except (RecoveryError, ReplayDivergenceError) as exc:
            error = str(exc)
            ticks, hashes = campaign.tick_count - start, 0
            first_bad = campaign.tick_count if isinstance(exc, ReplayDivergenceError) else _tick_of(error)
        wall = time.perf_counter() - t0
    finally:
        store.close(2.0)
    tick_rate = int(meta.get("tick_rate", 60))
    return {
        "campaign": campaign_id,
        "game": meta["game"],
        "seed": meta["seed"],
        "from_tick": start,
        "to_tick": campaign.tick_count,
        "ticks": ticks,
        "players_seen": len(players),
        "hashes_verified": hashes + checked_snaps,
        "final_state_hash": format_hash(state_hash(campaign.world)),
        "seconds": round(wall, 4),
        "ticks_per_s": round(ticks / wall, 1) if wall > 0 else 0.0,
        "speedup": round(ticks / tick_rate / wall, 1) if wall > 0 else 0.0,
        "journal_problem": str(reader.problem) if reader.problem is not None else None,
        "ok": error is None,
        "error": error,
        "first_diverging_tick": first_bad,
        **({"violations": flagged} if violations else {}),
    }


def _history_start(campaign: Campaign, store: CampaignStore) -> int:
    """Where the kept history starts: the genesis, or for a campaign restored from PostgreSQL (whose
    journal starts after a shipped snapshot, docs/relocation.md) that snapshot."""
    bounds = store.journal_bounds()
    first = bounds[0] if bounds is not None else None
    if first is not None and first <= 1:
        return 0
    newest = store.snapshot_ticks()
    if first is None and (not newest or newest[-1] == 0):
        return 0
    want = first - 1 if first is not None else newest[-1]
    start = restore_snapshot(campaign, store, max_tick=want)
    if start != want:
        raise RecoveryError(f"the journal starts at tick {want + 1} but there is no intact snapshot of tick {want}")
    return start


def _tick_of(msg: str) -> int | None:
    import re

    m = re.search(r"at tick (\d+)", msg)
    return int(m.group(1)) if m else None


def add_replay_parser(sub: Any) -> None:
    r = sub.add_parser("replay", help="re-simulate a campaign from its data dir, bit for bit")
    r.add_argument("path", help="data dir, campaign dir or campaign.sqlite")
    r.add_argument("--verify", action="store_true", help="check every recorded state hash")
    r.add_argument("--from-tick", type=int, default=None)
    r.add_argument("--to-tick", type=int, default=None)
    r.add_argument("--export", default=None, help="write per-tick summaries as JSON lines")
    r.add_argument("--violations", action="store_true", help="list the validators' violations on the way")
    r.add_argument("--json", action="store_true")
    r.add_argument("--serve", action="store_true", help="play it in the browser: serve the replay viewer")
    r.add_argument("--host", default="127.0.0.1", help="with --serve: address to listen on")
    r.add_argument("--port", type=int, default=8780, help="with --serve: port (0: a free one)")
    r.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.serve:
        return _serve(args)
    try:
        out = open(args.export, "w") if args.export else None  # noqa: SIM115
    except OSError as exc:
        print(f"arbiter replay: cannot write the export: {exc}", file=sys.stderr)
        return 2
    try:
        rep = run_replay(args.path, verify=args.verify, from_tick=args.from_tick, to_tick=args.to_tick, export=out,
                         violations=args.violations)  # fmt: skip
    except (FileNotFoundError, NotADirectoryError, CampaignLockedError, JournalFormatError) as exc:
        print(f"arbiter replay: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RecoveryError) as exc:  # several campaigns, an unknown game, no metadata
        print(f"arbiter replay: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not None:
            out.close()
    if args.json:
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            print(f"{k:>22}: {v}")
    if not rep["ok"]:
        print(f"replay FAILED at tick {rep['first_diverging_tick']}: {rep['error']}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from engine.tools.replay_serve import serve_replay

    try:
        asyncio.run(serve_replay(args.path, args.host, args.port))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RuntimeError: locked by a live server, bad data
        print(f"arbiter replay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        msg = f"cannot listen on {args.host}:{args.port} ({exc.strerror}); try --port 0"
        print(f"arbiter replay: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
