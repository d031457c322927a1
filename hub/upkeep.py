"""The hub's background work: the campaign lifecycle, revoked sessions, leaderboard rebuilds.

Every hub process runs it; each step is safe to run in several processes at once (conditional
UPDATEs, a Redis lock for the rebuild), so no process is special.

Lifecycle (docs/hub.md, "Campaign lifecycle"): scheduled → open when its window starts; a campaign
that was placed is running while a server reports it, and back to open when no server has reported
it for two sweeps (its server stopped or is down); at the end of a one-shot window → completed (its
server is told to stop); at the end of a weekly slot → scheduled for the next slot; completed →
archived after `archive_after_s` (its data and replay stay where they are).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from hub.http import PG_DOWN
from hub.schedule import next_weekly
from hub.state import Hub
from persistence.redis_layout import DEL_IF_EQUAL, REDIS_DOWN, pause

log = logging.getLogger("arbiter.hub.upkeep")

BOARD_CHECK_S = 5.0
REBUILD_BATCH = 1000


class Upkeep:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._rebuild = asyncio.Event()
        self._missing: dict[str, int] = {}
        self._revoked_since: dt.datetime | None = None
        self.sweeps = 0
        self.rebuilds = 0

    def rebuild_soon(self) -> None:
        self._rebuild.set()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._loop(self.sweep, self.hub.cfg.sweep_every_s, stop),
                             self._loop(self.poll_revocations, self.hub.cfg.revocation_poll_s, stop),
                             self._boards(stop))  # fmt: skip

    async def _loop(self, step: Callable[[], Awaitable[None]], every: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await step()
            except (*REDIS_DOWN, *PG_DOWN) as exc:
                log.debug("%s skipped: %s", getattr(step, "__name__", step), type(exc).__name__)
            except Exception:
                log.exception("%s failed", getattr(step, "__name__", step))
            await pause(stop, every)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def sweep(self) -> None:
        hub = self.hub
        store = hub.campaigns
        now = await hub.accounts.now()
        for row in await store.ended():
            assert row.ends_at is not None
            if row.schedule.get("kind") == "weekly":
                start, end = next_weekly(row.schedule["slots"], max(now, row.ends_at))
                changed = await store.advance_slot(row.campaign_id, row.ends_at, start, end)
                reason = "the campaign's slot is over"
            else:
                changed = await store.set_status(row.campaign_id, ("scheduled", "open", "running"), "completed")
                reason = "the campaign is over"
            if changed:
                log.info("campaign %s: %s", row.campaign_id, reason)
                with contextlib.suppress(*REDIS_DOWN):
                    await hub.placement.stop(row.campaign_id, reason)
        for cid in await store.open_due():
            log.info("campaign %s is open", cid)
        for row in await store.running():
            located = await hub.registry.locate(row.campaign_id)
            if located is not None:
                self._missing.pop(row.campaign_id, None)
                continue
            misses = self._missing[row.campaign_id] = self._missing.get(row.campaign_id, 0) + 1
            if misses >= 2 and await store.set_status(row.campaign_id, ("running",), "open"):
                self._missing.pop(row.campaign_id, None)
                log.info("campaign %s: no server reports it any more; open (placed again on the next join)",
                         row.campaign_id)  # fmt: skip
        await store.archive_due(hub.cfg.archive_after_s)
        self.sweeps += 1

    # -- revoked sessions --------------------------------------------------------------------------
    async def poll_revocations(self) -> None:
        """Families revoked by any hub, read from PostgreSQL: revocations hold even without Redis."""
        hub = self.hub
        if self._revoked_since is None:
            self._revoked_since = await hub.accounts.now() - dt.timedelta(seconds=hub.cfg.access_ttl_s + 60)
        rows = await hub.accounts.revoked_since(self._revoked_since)
        if rows:
            sessions = [s for s, _ in rows]
            fresh = [s for s in sessions if s not in hub.revoked]
            hub.revoked.add(sessions)
            if fresh:
                hub.streams.close_sessions(fresh)
            self._revoked_since = rows[-1][1]
        hub.revoked.purge()

    # -- leaderboards ------------------------------------------------------------------------------
    async def _boards(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._rebuild, stop)]
            await asyncio.wait(waiters, timeout=BOARD_CHECK_S, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            self._rebuild.clear()
            if stop.is_set():
                return
            try:
                await self.rebuild_boards()
            except (*REDIS_DOWN, *PG_DOWN) as exc:
                log.debug("leaderboard check skipped: %s", type(exc).__name__)
            except Exception:
                log.exception("leaderboard rebuild failed")

    async def rebuild_boards(self) -> bool:
        """Reload every score from PostgreSQL if Redis has no complete boards (one hub does it)."""
        hub = self.hub
        if await hub.boards.built():
            return False
        lock = hub.keys.lock("lb-rebuild")
        mine = secrets.token_hex(8)
        if not await hub.redis.set(lock, mine, nx=True, px=120_000):
            return False
        t0 = time.perf_counter()
        n = 0
        try:
            batch: list[tuple[str, str, int]] = []
            async for row in hub.social.scores():
                batch.append(row)
                if len(batch) >= REBUILD_BATCH:
                    n += await hub.boards.load(batch)
                    batch = []
            n += await hub.boards.load(batch)
            await hub.boards.mark_built()
        finally:
            await hub.redis.eval(DEL_IF_EQUAL, 1, lock, mine)  # only if still ours: one atomic step
        self.rebuilds += 1
        hub.metrics.leaderboard_rebuilds.inc()
        log.info("leaderboards rebuilt from PostgreSQL: %d scores in %.2f s", n, time.perf_counter() - t0)
        return True
