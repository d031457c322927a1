"""Opening a campaign's data directory: create it, or recover it after a stop or a crash.

Recovery = the newest intact snapshot + the journal after it, re-applied through the same
`Campaign` code the live server runs, checking every state hash recorded on the way. A torn or
corrupt journal tail (a write cut short by kill -9 or a bad disk) is truncated and reported.
The same replay drives `arbiter replay` (engine/replay.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.campaign import Campaign, TickResult
from engine.journal import pack_snapshot, unpack_snapshot
from persistence.campaign_store import DB_FILENAME, CampaignStore, JournalEntry, format_hash
from sim.statehash import state_hash

log = logging.getLogger("arbiter.recovery")

ENGINE_VERSION = "0.1.0"


class RecoveryError(RuntimeError):
    """The data cannot be re-simulated to a verified state; the server must not start on it."""


@dataclass(slots=True)
class RecoveryReport:
    created: bool = False
    snapshot_tick: int = 0
    replayed_ticks: int = 0
    resumed_tick: int = 0
    hashes_checked: int = 0
    truncated: list[str] = field(default_factory=list)
    seconds: float = 0.0


def campaign_meta(store: CampaignStore) -> dict[str, Any]:
    meta = store.get_meta()
    if not meta:
        return {}
    return {
        "game": meta["game"],
        "seed": int(meta["seed"]),
        "config": json.loads(meta.get("config", "{}")),
        "campaign": meta.get("campaign", ""),
        "tick_rate": int(meta.get("tick_rate", 60)),
    }


def replay_records(
    campaign: Campaign,
    entries: Iterator[JournalEntry],
    *,
    verify: bool = True,
    to_tick: int | None = None,
    on_tick: Callable[[TickResult], None] | None = None,
) -> tuple[int, int]:
    """Re-apply journal entries; returns (ticks replayed, hashes checked). Raises on divergence."""
    n = checked = 0
    for entry in entries:
        rec = entry.record
        if to_tick is not None and rec.tick > to_tick:
            break
        result = campaign.apply_record(rec.joins, rec.leaves, rec.inputs, rec.tick)
        n += 1
        if verify and entry.state_hash is not None:
            got = format_hash(state_hash(campaign.world))
            if got != entry.state_hash:
                raise RecoveryError(f"state diverges at tick {rec.tick}: recorded {entry.state_hash}, replay {got}")
            checked += 1
        if on_tick is not None:
            on_tick(result)
    return n, checked


def restore_snapshot(campaign: Campaign, store: CampaignStore, max_tick: int | None = None) -> int:
    """Load the newest intact snapshot (≤ max_tick) into `campaign`; returns its tick (0 = genesis)."""
    snap = store.latest_snapshot(max_tick)
    if snap is None:
        return 0
    world, accounts = unpack_snapshot(snap.data)
    if format_hash(state_hash(world)) != snap.state_hash:
        raise RecoveryError(f"snapshot of tick {snap.tick} does not match its recorded hash")
    campaign.replace_world(world, accounts)
    return snap.tick


def open_campaign(
    data_dir: str | Path,
    campaign_id: str,
    game: str,
    seed: int,
    config: Mapping[str, object],
    *,
    tick_rate: int = 60,
    durability: str = "normal",
    commit_delay: float = 0.0,
) -> tuple[Campaign, CampaignStore, RecoveryReport]:
    import time

    t0 = time.perf_counter()
    store = CampaignStore.open(data_dir, campaign_id, durability=durability, commit_delay=commit_delay)  # type: ignore[arg-type]
    report = RecoveryReport()
    try:
        meta = campaign_meta(store)
        if not meta:
            campaign = Campaign(game, seed, config, campaign_id)
            store.set_meta(
                {
                    "game": game,
                    "seed": str(seed),
                    "config": json.dumps(dict(config), sort_keys=True),
                    "campaign": campaign_id,
                    "tick_rate": str(tick_rate),
                    "engine_version": ENGINE_VERSION,
                }
            )
            w = campaign.world
            store.put_snapshot(w.tick, state_hash(w), pack_snapshot(w, campaign.accounts))
            store.flush(10.0)
            report.created = True
        else:
            if (meta["game"], meta["seed"]) != (game, seed):
                log.warning(
                    "data dir holds %s seed %d; ignoring --game %s --seed %d", meta["game"], meta["seed"], game, seed
                )
            campaign = Campaign(meta["game"], meta["seed"], meta["config"], campaign_id)
            report.snapshot_tick = restore_snapshot(campaign, store)
            repair = store.repair_tail(after_tick=report.snapshot_tick)
            if not repair.ok:
                report.truncated.append(str(repair))
                log.warning("journal tail repaired: %s", repair)
            reader = store.iter_journal(report.snapshot_tick)
            report.replayed_ticks, report.hashes_checked = replay_records(campaign, reader)
            if reader.problem is not None:
                report.truncated.append(str(reader.problem))
                log.warning("journal stops early: %s", reader.problem)
                store.truncate_journal(campaign.tick_count)
        report.resumed_tick = campaign.tick_count
    except BaseException:
        store.close(2.0)
        raise
    report.seconds = time.perf_counter() - t0
    return campaign, store, report


def resolve_store_path(path: str | Path) -> tuple[Path, str]:
    """Accept a data dir with one campaign, a campaign dir, or the SQLite file; → (data_dir, id)."""
    p = Path(path)
    if p.is_file():
        return p.parent.parent, p.parent.name
    if (p / DB_FILENAME).is_file():
        return p.parent, p.name
    found = sorted(d for d in p.iterdir() if (d / DB_FILENAME).is_file()) if p.is_dir() else []
    if len(found) == 1:
        return p, found[0].name
    if not found:
        raise FileNotFoundError(f"no campaign under {p}")
    raise ValueError(f"{p} holds several campaigns ({', '.join(d.name for d in found)}); name one")
