"""The campaign's durability on the tick path: journal records out, durable acknowledgements in.

Per tick the recorder encodes what the sim consumed (joins, leaves, inputs in order) and hands it
to the SQLite store's writer thread without waiting. Acknowledgements sent to clients (the
last-applied input seq in each snapshot) come from the newest tick the writer has *committed*,
so an input a player saw acknowledged survives a kill -9 ("acknowledged means durable").
"""

from __future__ import annotations

import collections
import json
import logging
import struct
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engine.campaign import Campaign
from persistence.campaign_store import CampaignStore
from persistence.journal_codec import encode_tick
from sim.entities import SLOT_MASK
from sim.inputs import InputBatch
from sim.statehash import state_hash
from sim.world import World

log = logging.getLogger("arbiter.journal")

_LEN = struct.Struct("<Q")


def pack_snapshot(world: World, accounts: Mapping[str, int]) -> bytes:
    """A snapshot blob: the world's arrays and the account → ship map (not part of the state hash)."""
    body = world.to_bytes()
    acc = json.dumps(sorted(accounts.items()), separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body + acc


def unpack_snapshot(blob: bytes) -> tuple[World, dict[str, int]]:
    (n,) = _LEN.unpack_from(blob, 0)
    world = World.from_bytes(memoryview(blob)[8 : 8 + n])
    accounts = {str(k): int(v) for k, v in json.loads(bytes(blob[8 + n :]).decode())}
    return world, accounts


class Journal:
    def __init__(
        self,
        campaign: Campaign,
        store: CampaignStore,
        *,
        snapshot_every: int = 600,
        hash_every: int = 60,
        max_ack_ring: int = 1200,
    ) -> None:
        self.campaign = campaign
        self.store = store
        self.snapshot_every = max(1, snapshot_every)
        self.hash_every = max(0, hash_every)
        self._backlog: collections.deque[tuple[int, bytes, int | None]] = collections.deque()
        # (tick, last_seq of the player slots after that tick), waiting for their commit.
        self._ring: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=max_ack_ring)
        lo = campaign.player_lo
        self._durable = campaign.world.arrays["last_seq"][lo:].copy()
        self.durable_tick = campaign.tick_count
        # An acknowledgement may also wait for a remote copy (engine/relocation.py, --ack-after pg):
        # then it follows the older of the local commit and the remote one.
        self._local_tick = campaign.tick_count
        self._remote_tick: int | None = None
        self.on_local_commit: Callable[[int], None] | None = None
        self.snapshots_taken = 0
        self.backlog_peak = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._pending: Future[bool] | None = None
        self._snapshot_due = False
        campaign.recorder = self.record

    # -- tick path --------------------------------------------------------------------------------
    def record(self, tick: int, joins: list[tuple[int, str]], leaves: list[int], batch: InputBatch) -> None:
        blob = encode_tick(tick, joins, leaves, batch.records())
        h = state_hash(self.campaign.world) if self.hash_every and tick % self.hash_every == 0 else None
        self._backlog.append((tick, blob, h))
        self._drain()
        lo = self.campaign.player_lo
        self._ring.append((tick, self.campaign.world.arrays["last_seq"][lo:].copy()))
        if tick % self.snapshot_every == 0:
            self._snapshot_due = True
        # A snapshot that could not be taken on its tick (backlog, previous one still in flight) is
        # taken as soon as it can be, so recovery never replays much more than `snapshot_every`.
        if self._snapshot_due and self.snapshot():
            self._snapshot_due = False

    def _drain(self) -> None:
        backlog = self._backlog
        while backlog:
            tick, blob, h = backlog[0]
            if not self.store.append_journal(tick, blob, h):
                # Backpressure: keep the record (in order) and offer it again next tick.
                if len(backlog) > self.backlog_peak:
                    self.backlog_peak = len(backlog)
                    if self.backlog_peak in (60, 600, 6000, 60000):
                        log.error("journal backlog of %d ticks: the disk is not keeping up", self.backlog_peak)
                return
            backlog.popleft()

    def snapshot(self) -> bool:
        """Take a world snapshot: the tick only copies the arrays (a memcpy); hashing and
        serializing happen on a helper thread, compression and the write on the store's thread."""
        if self._backlog or (self._pending is not None and not self._pending.done()):
            return False  # its journal prefix is not queued yet, or the previous one is still busy
        copy = self.campaign.world.copy()
        accounts = dict(self.campaign.accounts)
        self._pending = self._pool.submit(self._write_snapshot, copy, accounts)
        return True

    def _write_snapshot(self, world: World, accounts: dict[str, int]) -> bool:
        ok = self.store.put_snapshot(world.tick, state_hash(world), pack_snapshot(world, accounts))
        self.snapshots_taken += int(ok)
        return ok

    def wait_snapshot(self, timeout: float | None = None) -> bool:
        """Block until the snapshot in flight (if any) is queued; for shutdown and tests."""
        if self._pending is None:
            return True
        try:
            return bool(self._pending.result(timeout))
        except Exception:
            log.exception("snapshot failed")
            return False

    # -- acknowledgements -------------------------------------------------------------------------
    def on_commit(self, tick: int) -> None:
        """Called on the loop thread when every journal record up to `tick` is committed."""
        self._local_tick = tick
        if self.on_local_commit is not None:
            self.on_local_commit(tick)
        self._advance(tick if self._remote_tick is None else min(tick, self._remote_tick))

    def gate_on_remote(self) -> None:
        """From now on acknowledge only ticks that `on_remote_commit` has also reported. Call before
        the first tick: acknowledgements restart from nothing until the remote copy catches up."""
        self._remote_tick = -1
        lo = self.campaign.player_lo
        self._ring.appendleft((self.campaign.tick_count, self.campaign.world.arrays["last_seq"][lo:].copy()))
        self._durable = np.zeros_like(self._durable)

    def on_remote_commit(self, tick: int) -> None:
        """Every journal record up to `tick` is in the remote copy (loop thread)."""
        if self._remote_tick is None or tick <= self._remote_tick:
            return
        self._remote_tick = tick
        self._advance(min(tick, self._local_tick))

    def _advance(self, tick: int) -> None:
        ring = self._ring
        best = None
        while ring and ring[0][0] <= tick:
            best = ring.popleft()
        if best is not None:
            self.durable_tick = best[0]
            self._durable = best[1]

    def ack_for(self, eid: int) -> int:
        i = (eid & SLOT_MASK) - self.campaign.player_lo
        return int(self._durable[i]) if 0 <= i < len(self._durable) else 0

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def close(self, timeout: float = 10.0) -> bool:
        """Final snapshot and flush (graceful shutdown)."""
        self._drain()
        self.wait_snapshot(timeout)
        deadline_ok = self.store.flush(timeout)  # also makes room for the final snapshot
        self._drain()
        if self.snapshot():
            self.wait_snapshot(timeout)
        self._pool.shutdown(wait=True)
        ok = self.store.close(timeout)
        return ok and deadline_ok and not self._backlog
