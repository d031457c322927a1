"""Sealing and waking a hibernated campaign (engine/host.py): what a wake must give back, the world
of a campaign without a data dir kept packed in memory, and the ticks a game that declares
`Hibernation("advance")` runs for the time it slept (docs/hosting.md)."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import Final

from engine.campaign import Campaign
from engine.config import ServerConfig
from engine.journal import pack_snapshot, unpack_snapshot
from engine.recovery import RecoveryError
from engine.server import GameServer
from persistence.campaign_reader import format_hash

log = logging.getLogger("arbiter.host")

# Ticks an advancing wake runs between two yields to the loop (a few ms at most).
OFFLINE_CHUNK: Final = 16


def seal_mark(server: GameServer) -> tuple[int, int]:
    """(tick, state hash) of a campaign as it is sealed: what its wake must give back."""
    return server.campaign.tick_count, server.campaign.state_hash()


def pack_world(server: GameServer) -> bytes:
    """A campaign without a data dir hibernates into this (its world and ships, compressed)."""
    return zlib.compress(pack_snapshot(server.campaign.world, server.campaign.accounts), 1)


def unpack_world(cfg: ServerConfig, blob: bytes | None) -> Campaign:
    campaign = Campaign(cfg.game, cfg.seed, {"tick_rate": cfg.tick_rate, **dict(cfg.game_config)}, cfg.campaign)
    if blob is not None:
        world, accounts = unpack_snapshot(zlib.decompress(blob))
        campaign.replace_world(world, accounts)
    return campaign


def check_woken(server: GameServer, sealed: tuple[int, int] | None) -> None:
    """A wake gives back exactly the world that was sealed (its tick and state hash)."""
    if sealed is None:
        return
    got = seal_mark(server)
    if got != sealed:
        raise RecoveryError(f"campaign {server.cfg.campaign} woke at tick {got[0]} hash {format_hash(got[1])}, "
                            f"it hibernated at tick {sealed[0]} hash {format_hash(sealed[1])}")  # fmt: skip


async def advance_missed(server: GameServer, hibernated_wall: float) -> None:
    """A game that declares `Hibernation("advance")` runs the ticks it missed (at most `max_s` of
    them), OFFLINE_CHUNK at a time: the host's other campaigns tick in between."""
    h = server.campaign.game.hibernation
    if h.mode != "advance" or not hibernated_wall:
        return
    missed = min(max(0.0, time.time() - hibernated_wall), h.max_s)
    n = int(missed * server.cfg.tick_rate)
    for done in range(0, n, OFFLINE_CHUNK):
        server.run_offline(min(OFFLINE_CHUNK, n - done))
        await asyncio.sleep(0)
    if n:
        log.info("campaign %s ran the %d ticks it missed while hibernated", server.cfg.campaign, n)
