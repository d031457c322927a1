"""The honest players of bench.fairplay: a network model (delay, jitter, stalls, loss, TCP order, in
ticks) and a fleet of bots deciding from stale views like startales' bot brain (StartalesBrain), vectorized
so that 1000 of them run faster than real time."""

from __future__ import annotations

import numpy as np

from sim.entities import SLOT_MASK
from sim.games.startales.constants import (
    ACTION_BUILD,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    ACTION_STOP,
    BUILD_COST_CRYSTAL,
    BUILD_COST_METAL,
)
from sim.games.startales.game import Startales
from sim.inputs import InputBatch
from sim.world import META_PLAYER_LO, World

RING = 128  # ticks of history the bots' stale views read from (>= the largest downstream delay)
PARK_RADIUS = 30.0  # half the harvest range: a bot asks for a harvest only this close, and slow


# -- the network model ---------------------------------------------------------------------------
class Link:
    """One direction of every bot's connection: delay, jitter, stalls, loss, TCP order (in ticks)."""

    def __init__(self, n: int, rng: np.random.Generator, loss: float = 0.01) -> None:
        self.rng = rng
        self.n = n
        self.loss = loss
        self.stall_at = rng.integers(180, 360, n)
        self.stall_end = np.zeros(n, dtype=np.int64)
        self.last = np.zeros(n, dtype=np.int64)  # latest delivery tick (TCP order)
        self.stalls = 0

    def delays(self, now: int, who: np.ndarray) -> np.ndarray:
        """Delivery ticks of one message per bot in `who` sent at `now` (monotone per bot)."""
        rng = self.rng
        starting = who[self.stall_at[who] <= now]
        if starting.size:
            self.stall_end[starting] = now + rng.integers(9, 22, starting.size)  # 150-350 ms
            self.stall_at[starting] = now + rng.integers(180, 361, starting.size)  # every 3-6 s
            self.stalls += int(starting.size)
        base = now + rng.integers(6, 13, who.size)  # 100-200 ms one way
        base = np.maximum(base, self.stall_end[who] + rng.integers(6, 13, who.size))
        lost = rng.random(who.size) < self.loss
        base[lost] += 12  # retransmitted after a 200 ms RTO
        out = np.maximum(base, self.last[who])
        self.last[who] = out
        return out


_ROW = np.dtype(
    [("arr", "<i8"), ("eid", "<u4"), ("seq", "<u4"), ("ct", "<u4"), ("dx", "<f4"), ("dy", "<f4"),
     ("act", "<i4"), ("arg", "<i4"), ("amt", "<i4"), ("txn", "<u4")]
)  # fmt: skip


# -- honest players ------------------------------------------------------------------------------
class HonestFleet:
    """Bots deciding from stale views, as sim/games/startales/brain.py's StartalesBrain does, vectorized."""

    def __init__(self, game: Startales, world: World, n: int, rng: np.random.Generator) -> None:
        self.game, self.world, self.n, self.rng = game, world, n, rng
        self.eids = np.array([game.join(world) for _ in range(n)], dtype=np.int64)
        lo = int(world.arrays["meta"][META_PLAYER_LO])
        self.slots = (self.eids & SLOT_MASK).astype(np.int64)
        self.p = self.slots - lo
        self.phase = rng.integers(0, 3, n)
        self.seq = np.zeros(n, dtype=np.int64)
        self.up, self.down = Link(n, rng), Link(n, rng)
        self.view = np.zeros(n, dtype=np.int64)  # newest server tick each bot has seen
        self.target = rng.integers(0, game.cfg["planets"], n)
        self.harvesting = np.zeros(n, dtype=bool)
        self.since = np.zeros(n, dtype=np.int64)
        self.spend_visible = np.zeros(n, dtype=np.int64)  # view tick from which the last spend is seen
        self.claimed = np.zeros(n, dtype=np.uint32)
        self.txn = np.zeros(n, dtype=np.int64)
        a = world.arrays
        self.ring = {k: np.zeros((RING, len(a[k]) if k in ("x", "y", "vx", "vy") else n), dtype=a[k].dtype)
                     for k in ("x", "y", "vx", "vy", "bal_metal", "bal_crystal", "achievements")}  # fmt: skip
        self.calendar: dict[int, list[np.ndarray]] = {}
        self.record()

    def record(self) -> None:
        a, r = self.world.arrays, self.world.tick % RING
        for k in ("x", "y", "vx", "vy"):
            self.ring[k][r] = a[k]
        for k in ("bal_metal", "bal_crystal", "achievements"):
            self.ring[k][r] = a[k][self.p]

    def decide(self, now: int) -> None:
        """Every bot whose 20 Hz slot is now: look (stale), decide, send (into the up link)."""
        who = np.flatnonzero(self.phase == now % 3)
        if who.size == 0:
            return
        rng = self.rng
        # What the bots have seen: the server ticks that reached them by now (monotone, TCP order).
        seen = self.down.delays(now, who)
        self.view[who] = np.maximum(self.view[who], now - (seen - now))
        vt = np.minimum(self.view[who], self.world.tick) % RING
        s, r = self.slots[who], self.ring
        x, y, vx, vy = r["x"][vt, s], r["y"][vt, s], r["vx"][vt, s], r["vy"][vt, s]
        a = self.world.arrays
        tgt = self.target[who]
        dx, dy = a["x"][tgt] - x, a["y"][tgt] - y
        dist = np.hypot(dx, dy)
        speed = np.hypot(vx, vy)
        metal, crystal = r["bal_metal"][vt, who], r["bal_crystal"][vt, who]
        ach = r["achievements"][vt, who]
        n = who.size
        act = np.zeros(n, dtype=np.int32)
        arg = np.zeros(n, dtype=np.int32)
        amount = np.zeros(n, dtype=np.int32)
        txn = np.zeros(n, dtype=np.int64)
        scale = np.minimum(1.0, dist / 200.0) / np.maximum(dist, 1e-6)
        tx = dx * scale - vx * 0.02
        ty = dy * scale - vy * 0.02
        m = np.hypot(tx, ty)
        over = m > 0.999
        tx[over] *= 0.999 / m[over]
        ty[over] *= 0.999 / m[over]
        parked = (dist <= PARK_RADIUS) & (speed < 60.0)
        tx[parked] = 0.0
        ty[parked] = 0.0
        free = self.view[who] >= self.spend_visible[who]
        roll = rng.random(n)
        unclaimed = ach & ~self.claimed[who]
        claim = unclaimed != 0
        build = parked & ~claim & free & (metal >= BUILD_COST_METAL) & (crystal >= BUILD_COST_CRYSTAL) & (roll < 0.2)
        gift = parked & ~claim & ~build & free & (metal >= 10) & (roll > 0.99)
        harvest = parked & ~claim & ~build & ~gift & ~self.harvesting[who]
        leave = parked & ~claim & ~build & ~gift & self.harvesting[who] & (now - self.since[who] > 120)
        if claim.any():
            bit = (unclaimed[claim] & (~unclaimed[claim] + np.uint32(1))).astype(np.uint64)  # lowest set bit
            ids = np.log2(bit.astype(np.float64)).astype(np.int32)
            act[claim], arg[claim] = ACTION_CLAIM, ids
            self.claimed[who[claim]] |= bit.astype(np.uint32)
        act[build] = ACTION_BUILD
        if gift.any():
            to = self.eids[(who[gift] + 1 + rng.integers(0, self.n - 1, int(gift.sum()))) % self.n]
            act[gift], arg[gift] = ACTION_GIFT, ((to + 2**31) % 2**32 - 2**31).astype(np.int32)
            amount[gift] = rng.integers(1, 6, int(gift.sum()))
            self.txn[who[gift]] += 1
            txn[gift] = self.txn[who[gift]]
        act[harvest] = ACTION_HARVEST
        self.harvesting[who[harvest]] = True
        self.since[who[harvest]] = now
        act[leave] = ACTION_STOP
        self.harvesting[who[leave]] = False
        self.target[who[leave]] = rng.integers(0, self.game.cfg["planets"], int(leave.sum()))
        arrive = self.up.delays(now, who)
        spend = build | gift
        # The bot sees its spend applied once its view passes the tick it lands in (+ the step).
        self.spend_visible[who[spend]] = arrive[spend] + 2
        self.seq[who] += 1
        ct = self.view[who]
        rows = np.zeros(n, dtype=_ROW)
        rows["arr"], rows["eid"], rows["seq"], rows["ct"] = arrive, self.eids[who], self.seq[who], ct
        rows["dx"], rows["dy"], rows["act"], rows["arg"] = tx, ty, act, arg
        rows["amt"], rows["txn"] = amount, txn
        for t in np.unique(arrive):
            self.calendar.setdefault(int(t), []).append(rows[arrive == t])

    def deliver(self, now: int, batch: InputBatch) -> int:
        chunks = self.calendar.pop(now, None)
        if not chunks:
            return 0
        rows = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        k = len(rows)
        i = batch.n
        batch.eid[i : i + k], batch.seq[i : i + k], batch.client_tick[i : i + k] = rows["eid"], rows["seq"], rows["ct"]
        batch.dx[i : i + k], batch.dy[i : i + k] = rows["dx"], rows["dy"]
        batch.action[i : i + k], batch.arg[i : i + k] = rows["act"], rows["arg"]
        batch.arg3[i : i + k], batch.txn[i : i + k] = rows["amt"], rows["txn"]
        batch.n = i + k
        return k
