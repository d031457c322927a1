"""Bot players: N real WebSocket clients in one process, for demos, tests and load.

One scheduler drives every bot on an absolute 20 Hz schedule with a random phase per bot (the
peer load driver's pattern), so a thousand bots cost one wake-up per few bots rather than a timer
each. Most wander bots only count snapshots (`peek_snapshot_tick`); a few decode fully and check
that their own ship moves. Startales bots all decode: they fly between planets, harvest and build.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from netcode.client import ArbiterClient
from netcode.client_session import Snapshot
from netcode.prediction import Interpolator, ShipPredictor, TickClock
from netcode.prediction import warmup as prediction_warmup
from netcode.replication.warm import warmup as replication_warmup
from sim.games.startales.game import scan_arg

HARVEST, BUILD, STOP, GIFT, CLAIM = 1, 2, 3, 5, 6
EV_ACHIEVEMENT, EV_BALANCE, EV_BUILT, EV_TRANSFER = 1, 2, 4, 6
log = logging.getLogger("arbiter.bots")


@dataclass(slots=True)
class BotConfig:
    url: str = "ws://127.0.0.1:8765/"
    game: str = "wander"
    count: int = 10
    duration: float = 10.0
    input_rate: float = 20.0
    full_decoders: int = 8  # wander: bots that decode every snapshot (the rest count only)
    illegal_fraction: float = 0.01  # wander: deliberately illegal (1, 1) inputs
    seed: int = 12345
    connect_concurrency: int = 64
    ping_every: float = 1.0
    name_prefix: str = "bot"
    token_factory: Callable[[str], str] | None = None  # account -> join token (when tokens are on)
    dwell_s: float = 10.0  # startales: seconds at a planet before flying on


class WanderBrain:
    """Heading random walk: p = 0.1 turn by U(-π/2, π/2), magnitude U[0.5, 1], 1 % (1, 1)."""

    def __init__(self, n: int, rng: np.random.Generator, illegal: float) -> None:
        # Python's generator: a few scalar draws per input cost less than numpy's per-call overhead.
        self.rand = random.Random(int(rng.integers(2**63)))
        self.heading = [self.rand.uniform(0.0, 2 * math.pi) for _ in range(n)]
        self.illegal = illegal

    def next_input(self, i: int) -> tuple[float, float, int, int]:
        r = self.rand
        if r.random() < self.illegal:
            return 1.0, 1.0, 0, 0
        if r.random() < 0.1:
            self.heading[i] += r.uniform(-math.pi / 2, math.pi / 2)
        mag = r.uniform(0.5, 1.0)
        h = self.heading[i]
        return mag * math.cos(h), mag * math.sin(h), 0, 0


class StartalesBrain:
    """An honest player: fly to a planet, harvest, build when affordable, now and then give a
    little metal to a ship in view, claim each achievement the server granted, move on.

    Honest under lag: a spending action (BUILD, GIFT) is sent only when the last balance the
    server reported covers it and no other spend is unconfirmed (until its EV_BUILT/EV_TRANSFER,
    or 3 s if it was refused), so it can never be unaffordable however late the events arrive; HARVEST
    is asked once per arrival; transaction ids only grow (docs/fairplay.md).
    """

    def __init__(self, n: int, rng: np.random.Generator, world: dict[str, Any], dwell_s: float = 10.0) -> None:
        self.rng = rng
        self.dwell_ticks = int(dwell_s * float(world.get("tick_rate", 60)))
        self.target = np.full(n, -1, dtype=np.int64)
        self.harvesting = np.zeros(n, dtype=bool)
        self.harvest_since = np.zeros(n, dtype=np.int64)
        self.range = float(world.get("harvest_range", 60.0))
        self.cost_metal = int(world.get("build_cost_metal", 50))
        self.cost_crystal = int(world.get("build_cost_crystal", 0))
        self.balances = np.zeros((n, 2), dtype=np.int64)
        self.spend_pending_until = np.zeros(n, dtype=np.int64)  # tick; 0 = nothing unconfirmed
        self.claims: list[list[int]] = [[] for _ in range(n)]
        self.built = self.gifts_confirmed = self.achievements = 0
        # Transaction ids stay increasing across runs of the same accounts: seconds since 2025 × 64.
        self.txn = np.full(n, max(1, (int(time.time()) - 1_735_689_600) * 64), dtype=np.int64)

    def on_events(self, i: int, events: list[tuple[int, int, int]]) -> None:
        for kind, a, b in events:
            if kind == EV_BALANCE and 0 <= a < 2:
                self.balances[i, a] = b
            elif kind in (EV_BUILT, EV_TRANSFER):
                self.spend_pending_until[i] = 0
                if kind == EV_BUILT:
                    self.built += 1
                else:
                    self.gifts_confirmed += 1
            elif kind == EV_ACHIEVEMENT:
                self.claims[i].append(a)
                self.achievements += 1

    def next_input(self, i: int, client: ArbiterClient) -> tuple[float, float, int, int, int, int, int]:
        snap = client.latest
        if snap is None:
            return 0.0, 0.0, 0, 0, 0, 0, 0
        if self.claims[i]:
            return 0.0, 0.0, CLAIM, self.claims[i].pop(), 0, 0, 0
        ents = snap.entities
        mine = ents[ents["id"] == client.player]
        if mine.size == 0:
            return 0.0, 0.0, 0, 0, 0, 0, 0
        x, y = float(mine["x"][0]), float(mine["y"][0])
        planets = ents[ents["kind"] == 0]
        if planets.size == 0:
            return 0.0, 0.0, 0, 0, 0, 0, 0
        if self.target[i] < 0 or self.target[i] >= planets.size:
            # A new destination away from here: every trip is real flying, not parking.
            far = np.nonzero(np.hypot(planets["x"] - x, planets["y"] - y) > 2 * self.range)[0]
            pool = far if far.size else np.arange(planets.size)
            self.target[i] = int(pool[self.rng.integers(pool.size)])
        p = planets[self.target[i]]
        dx, dy = float(p["x"]) - x, float(p["y"]) - y
        dist = math.hypot(dx, dy)
        if dist > self.range * 0.5:
            self.harvesting[i] = False
            scale = min(1.0, dist / 200.0) / max(dist, 1e-6)
            vx, vy = float(mine["vx"][0]), float(mine["vy"][0])
            # Steer towards the planet and brake on approach.
            return (*_clip(dx * scale - vx * 0.02, dy * scale - vy * 0.02), 0, 0, 0)
        vx, vy = float(mine["vx"][0]), float(mine["vy"][0])
        if math.hypot(vx, vy) >= 60.0:  # park before asking for anything at a planet
            return (*_clip(-vx * 0.01, -vy * 0.01), 0, 0, 0)
        bal = self.balances[i]
        pending = self.spend_pending_until[i]
        free = pending == 0 or snap.tick > pending
        if free and bal[0] >= self.cost_metal and bal[1] >= self.cost_crystal and self.rng.random() < 0.2:
            self.spend_pending_until[i] = snap.tick + 180
            return 0.0, 0.0, BUILD, 0, 0, 0, 0
        if free and bal[0] >= 10 and self.rng.random() < 0.01:
            ships = ents[(ents["kind"] == 2) & (ents["id"] != client.player)]
            if ships.size:
                self.spend_pending_until[i] = snap.tick + 180
                self.txn[i] += 1
                to = int(ships["id"][self.rng.integers(ships.size)])
                return 0.0, 0.0, GIFT, scan_arg(to), 0, 1 + int(self.rng.integers(5)), int(self.txn[i])
        if not self.harvesting[i]:
            self.harvesting[i] = True
            self.harvest_since[i] = snap.tick
            return 0.0, 0.0, HARVEST, 0, 0, 0, 0
        if snap.tick - self.harvest_since[i] > self.dwell_ticks:  # enough of this planet: move on
            self.target[i] = -1
            self.harvesting[i] = False
            return 0.0, 0.0, STOP, 0, 0, 0, 0
        return 0.0, 0.0, 0, 0, 0, 0, 0


def _reconciler(
    c: ArbiterClient, pred: ShipPredictor, clock: TickClock, interp: Interpolator, loop: asyncio.AbstractEventLoop
) -> Callable[[Snapshot], None]:
    def on_snapshot(snap: Snapshot) -> None:
        clock.observe(snap.tick, loop.time())
        interp.push_records(snap.tick, snap.entities, exclude=c.player)
        me = snap.entities[snap.entities["id"] == c.player]
        if me.size:
            pred.on_snapshot(
                snap.tick, snap.ack_seq, float(me["x"][0]), float(me["y"][0]), float(me["vx"][0]), float(me["vy"][0])
            )

    return on_snapshot


def _clip(dx: float, dy: float) -> tuple[float, float, int, int]:
    m = math.hypot(dx, dy)
    if m > 0.999:
        # A unit vector in float64 can exceed 1 in float32 (the server's precision) and be refused.
        dx, dy = dx * 0.999 / m, dy * 0.999 / m
    return dx, dy, 0, 0


@dataclass(slots=True)
class BotReport:
    bots: int
    connected: int
    connect_failures: int
    duration_s: float
    inputs_sent: int
    inputs_per_s: float
    inputs_target_per_s: float
    snapshots: int
    snapshots_per_bot_s: float
    snapshots_per_bot_s_min: float
    bytes_in_per_bot_s: float
    refused_seen: int
    errors_seen: int
    closed_early: int
    moved: int
    decoders: int
    rtt_p50_ms: float
    rtt_p99_ms: float
    driver_cpu_s: float
    driver_cpu_cores: float
    late_inputs: int
    # client-side prediction of the bots' own ships (the first `full_decoders` bots)
    predicted_bots: int = 0
    prediction_error_mean: float = 0.0
    prediction_error_max: float = 0.0
    correction_rate: float = 0.0
    # interpolation of remote entities by the same bots (a buffer of two send intervals)
    interpolated_bots: int = 0
    interp_starved_rate: float = 0.0  # samples whose render tick passed the newest snapshot
    interp_entities_mean: float = 0.0
    # startales: what the honest players got done, counted from their own events
    built: int = 0
    gifts_confirmed: int = 0
    achievements: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


async def run_bots(cfg: BotConfig, stop: asyncio.Event | None = None) -> BotReport:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(cfg.seed)
    clients: list[ArbiterClient | None] = [None] * cfg.count
    failures = 0
    sem = asyncio.Semaphore(cfg.connect_concurrency)
    decode_all = cfg.game != "wander"

    async def connect(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                name = f"{cfg.name_prefix}{i}"
                token = cfg.token_factory(name) if cfg.token_factory is not None else ""
                clients[i] = await ArbiterClient.connect(
                    cfg.url, name, token, decode=decode_all or i < cfg.full_decoders
                )
            except (TimeoutError, OSError, ConnectionError, RuntimeError):
                failures += 1

    # Compile/load the client-side kernels (delta decoding, prediction) before the clock starts.
    replication_warmup()
    prediction_warmup()
    await asyncio.gather(*(connect(i) for i in range(cfg.count)))
    live = [(i, c) for i, c in enumerate(clients) if c is not None]
    cpu0 = _cpu()  # the driver's cost while playing, not while connecting
    t_start = loop.time()
    snaps0 = {i: c.snapshots for i, c in live}
    bytes0 = {i: (c.conn.bytes_in if c.conn else 0) for i, c in live}
    first_pos: dict[int, tuple[float, float]] = {}
    last_pos: dict[int, tuple[float, float]] = {}
    rtts: list[float] = []
    world = live[0][1].welcome.world if live and live[0][1].welcome else {}
    wander = WanderBrain(cfg.count, rng, cfg.illegal_fraction)
    startales = StartalesBrain(cfg.count, rng, dict(world), cfg.dwell_s)
    refused = 0

    # A few bots predict their own ship and reconcile with the server's snapshots, as game clients
    # do (netcode/prediction.py); their error and correction rate go into the report.
    # They also render everyone else through an interpolation buffer of two send intervals, and
    # report how often it ran dry (the render tick passed the newest snapshot: extrapolation).
    preds: dict[int, tuple[ShipPredictor, TickClock]] = {}
    interps: dict[int, Interpolator] = {}
    for i, c in live[: cfg.full_decoders]:
        w = c.welcome
        if w is None or not c.decode:
            continue
        pred, clock = ShipPredictor(w.game, w.world, epsilon=0.05), TickClock(w.tick_rate)
        interp = Interpolator(delay_ticks=2.0 * w.tick_rate / max(w.send_rate, 1))
        preds[i], interps[i] = (pred, clock), interp
        c.on_snapshot = _reconciler(c, pred, clock, interp, loop)
    interp_samples = interp_starved = interp_entities = 0

    period = 1.0 / cfg.input_rate
    n = len(live)
    watched = live if decode_all else live[: cfg.full_decoders]
    next_track = 0.0
    next_due = t_start + rng.uniform(0.0, period, n)
    inputs_sent = 0
    late = 0
    end = t_start + cfg.duration
    next_ping = t_start
    stop = stop or asyncio.Event()

    while not stop.is_set():
        now = loop.time()
        if now >= end:
            break
        # Serve every bot due within the next 2 ms in one wake-up (the schedule stays absolute).
        due = np.nonzero(next_due <= now + 0.002)[0]
        for j in due.tolist():  # Python ints: cheaper list indexing than numpy scalars
            i, c = live[j]
            if not c.is_open:
                next_due[j] = math.inf
                continue
            if c.events:
                evs = list(c.events)
                c.events.clear()
                refused += sum(1 for e in evs if e[0] == 3)
                if decode_all:
                    startales.on_events(i, evs)
            if decode_all:
                dx, dy, a, g, g2, g3, tx = startales.next_input(i, c)
                seq = c.send_input(dx, dy, a, g, arg2=g2, arg3=g3, txn=tx)
            else:
                dx, dy, a, g = wander.next_input(i)
                seq = c.send_input(dx, dy, a, g)
            inputs_sent += 1
            if i in preds:
                pred, clock = preds[i]
                pred.send(seq, dx, dy, clock.input_tick(now, c.session.rtt or 0.0))
        if due.size:
            next_due[due] += period
            behind = next_due[due] < now
            if behind.any():
                # Keep the absolute schedule but never send bursts to catch up.
                late += int(behind.sum())
                next_due[due[behind]] = now + period
        if now >= next_track:
            # Own-ship positions of the decoding bots, sampled at the send rate, not per wake-up.
            next_track = now + 0.05
            for i, interp in interps.items():
                clock = preds[i][1]
                if interp.latest_tick >= 0 and clock.offset is not None:
                    view = interp.sample(clock.render_tick(now, interp.delay_ticks))
                    interp_samples += 1
                    interp_starved += int(view.extrapolated)
                    interp_entities += len(view.ids)
            for i, c in watched:
                snap = c.latest
                if snap is not None:
                    ents = snap.entities
                    me = ents[ents["id"] == c.player]
                    if me.size:
                        pos = (float(me["x"][0]), float(me["y"][0]))
                        first_pos.setdefault(i, pos)
                        last_pos[i] = pos
        if now >= next_ping:
            next_ping = now + cfg.ping_every
            for _, c in live[: cfg.full_decoders]:
                if c.is_open:
                    task = asyncio.ensure_future(c.ping())
                    task.add_done_callback(lambda t: rtts.append(t.result()) if not t.exception() else None)
        nxt = float(next_due.min()) if n else end
        delay = min(nxt, end, next_ping) - loop.time()
        if delay > 0:
            # A plain sleep, not wait_for(stop.wait()): that made a task per wake-up (~500 a second);
            # `stop` is checked at the top of the loop at least every 50 ms.
            await asyncio.sleep(min(delay, 0.05))
        else:
            await asyncio.sleep(0)

    elapsed = max(loop.time() - t_start, 1e-9)
    cpu = _cpu() - cpu0
    per_bot = [(c.snapshots - snaps0[i]) / elapsed for i, c in live]
    bytes_in = sum((c.conn.bytes_in if c.conn else 0) - bytes0[i] for i, c in live)
    refused += sum(1 for _, c in live for e in c.events if e[0] == 3)
    errors = sum(len(c.errors) for _, c in live)
    closed_early = sum(1 for _, c in live if not c.is_open)
    moved = sum(1 for i in first_pos if i in last_pos and math.dist(first_pos[i], last_pos[i]) > 1e-3)
    unmoved = [
        i for i, _ in watched if i not in first_pos or i not in last_pos or math.dist(first_pos[i], last_pos[i]) <= 1e-3
    ]
    if unmoved:
        log.info("bots whose ship was not seen moving: %s", [(i, first_pos.get(i), last_pos.get(i)) for i in unmoved])
    for _, c in live:
        await c.close(timeout=0.5) if c.is_open else None
    rt = np.array(rtts) * 1e3 if rtts else np.zeros(1)
    pstats = [p.stats() for p, _ in preds.values()]
    n_snap = sum(int(p["snapshots"]) for p in pstats)
    return BotReport(
        built=startales.built,
        gifts_confirmed=startales.gifts_confirmed,
        achievements=startales.achievements,
        bots=cfg.count,
        connected=n,
        connect_failures=failures,
        duration_s=round(elapsed, 3),
        inputs_sent=inputs_sent,
        inputs_per_s=round(inputs_sent / elapsed, 1),
        inputs_target_per_s=round(n * cfg.input_rate, 1),
        snapshots=int(sum(c.snapshots - snaps0[i] for i, c in live)),
        snapshots_per_bot_s=round(float(np.mean(per_bot)) if per_bot else 0.0, 3),
        snapshots_per_bot_s_min=round(float(np.min(per_bot)) if per_bot else 0.0, 3),
        bytes_in_per_bot_s=round(bytes_in / elapsed / max(n, 1), 1),
        refused_seen=refused,
        errors_seen=errors,
        closed_early=closed_early,
        moved=moved,
        decoders=min(cfg.full_decoders, n) if not decode_all else n,
        rtt_p50_ms=round(float(np.percentile(rt, 50)), 3),
        rtt_p99_ms=round(float(np.percentile(rt, 99)), 3),
        driver_cpu_s=round(cpu, 3),
        driver_cpu_cores=round(cpu / elapsed, 3),
        late_inputs=late,
        predicted_bots=len(pstats),
        prediction_error_mean=round(
            sum(float(p["mean_error"]) * int(p["snapshots"]) for p in pstats) / max(n_snap, 1), 4
        ),
        prediction_error_max=round(max((float(p["max_error"]) for p in pstats), default=0.0), 4),
        correction_rate=round(sum(int(p["corrections"]) for p in pstats) / max(n_snap, 1), 4),
        interpolated_bots=len(interps),
        interp_starved_rate=round(interp_starved / max(interp_samples, 1), 4),
        interp_entities_mean=round(interp_entities / max(interp_samples, 1), 1),
    )


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
