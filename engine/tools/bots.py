"""Bot players: N real WebSocket clients in one process, for demos, tests and load.

The bots learn what they play from the server: `GET /info` names the game and the campaign (their
join tokens must name it), the welcome carries the game's spec. Each game's own brain decides the
inputs (`Game.brain`, looked up in the game registry), or the generic one (sim/brain.py: legal
random inputs from the spec) when the game has none or is not installed here.

One scheduler drives every bot on an absolute 20 Hz schedule with a random phase per bot (the
peer load driver's pattern), so a thousand bots cost one wake-up per few bots rather than a timer
each. Unless the brain needs every snapshot decoded, most bots only count snapshots
(`peek_snapshot_tick`) and a few decode fully, predict their own ship and check that it moves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.security.auth import AuthCode
from netcode.client import ArbiterClient, ServerError
from netcode.client_session import Snapshot
from netcode.prediction import Interpolator, ShipPredictor, TickClock
from netcode.prediction import warmup as prediction_warmup
from netcode.protocol import EV_REFUSED, ErrorCode
from netcode.replication.warm import warmup as replication_warmup
from sim.brain import Brain
from sim.registry import game_class

log = logging.getLogger("arbiter.bots")


@dataclass(slots=True)
class BotConfig:
    url: str = "ws://127.0.0.1:8765/"
    urls: tuple[str, ...] = ()  # several servers or campaigns (a host's /c/{id}/): bot i joins urls[i % len]
    count: int = 10
    duration: float = 10.0
    input_rate: float = 20.0
    full_decoders: int = 8  # bots that decode every snapshot (all of them if the brain needs it)
    seed: int = 12345
    connect_concurrency: int = 64
    ping_every: float = 1.0
    name_prefix: str = "bot"
    campaign: str | None = None  # the campaign the join tokens name; None: ask the server (/info)
    game: str | None = None  # whose brain the bots play with; None: the game the server reports
    token_factory: Callable[[str, str], str] | None = None  # (account, campaign) -> join token (tokens on)
    brain_options: Mapping[str, Any] = field(default_factory=dict)  # the game brain's own knobs


def brain_for(game: str) -> type[Brain]:
    """The game's own bot brain, or the generic one when it has none or is not installed here."""
    try:
        return game_class(game).brain or Brain
    except (ValueError, TypeError):
        log.info("game %r is not installed here: its bots use the generic brain", game)
        return Brain


@dataclass(slots=True)
class BotView:
    """What a brain sees of one bot (sim/brain.py's BotView protocol)."""

    tick: int
    player: int
    entities: np.ndarray


def server_info(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The server's `GET /info` (game, campaign, ...), or {} when it has none. Asked beside the
    URL's path: a host's campaign at ws://HOST/c/ID/ answers at /c/ID/info."""
    u = urllib.parse.urlsplit(url)
    scheme = "https" if u.scheme == "wss" else "http"
    base = u.path if u.path.endswith("/") else u.path.rsplit("/", 1)[0] + "/"
    try:
        with urllib.request.urlopen(f"{scheme}://{u.netloc}{base}info", timeout=timeout) as r:
            info = json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return {}
    return info if isinstance(info, dict) else {}


def _refusal(exc: BaseException) -> str:
    """Why a bot could not join, in one short line (the server's error code name when it said)."""
    if isinstance(exc, ServerError):
        name = f"error {exc.code}"
        for codes in (ErrorCode, AuthCode):
            if exc.code in codes._value2member_map_:
                name = codes(exc.code).name
        return f"{name}: {exc.msg}"[:120]
    return f"{type(exc).__name__}: {exc}"[:120]


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
    rtt_samples: int  # pings answered (the RTT figures are bench.ccu's and the demo's)
    driver_cpu_s: float
    driver_cpu_cores: float
    late_inputs: int
    game: str = ""
    connect_errors: dict[str, int] = field(default_factory=dict)  # why connections were refused
    events: dict[str, int] = field(default_factory=dict)  # events the bots received, by the spec's names
    brain: dict[str, int] = field(default_factory=dict)  # what the game's brain counted
    # client-side prediction of the bots' own ships (the first `full_decoders` bots)
    predicted_bots: int = 0
    prediction_error_mean: float = 0.0
    prediction_error_max: float = 0.0
    correction_rate: float = 0.0
    # interpolation of remote entities by the same bots (a buffer of two send intervals)
    interpolated_bots: int = 0
    interp_starved_rate: float = 0.0  # samples whose render tick passed the newest snapshot
    interp_entities_mean: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


async def run_bots(cfg: BotConfig, stop: asyncio.Event | None = None) -> BotReport:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(cfg.seed)
    urls = list(cfg.urls) or [cfg.url]
    infos = dict(zip(urls, await asyncio.gather(*(asyncio.to_thread(server_info, u) for u in urls)), strict=True))
    info = infos[urls[0]]
    campaign_of = {u: cfg.campaign or str(i.get("campaign", "default")) for u, i in infos.items()}
    game = cfg.game or info.get("game")
    brain_cls = brain_for(str(game)) if game else Brain
    clients: list[ArbiterClient | None] = [None] * cfg.count
    refusals: Counter[str] = Counter()
    sem = asyncio.Semaphore(cfg.connect_concurrency)

    async def connect(i: int) -> None:
        async with sem:
            try:
                name = f"{cfg.name_prefix}{i}"
                url = urls[i % len(urls)]
                token = cfg.token_factory(name, campaign_of[url]) if cfg.token_factory is not None else ""
                decode = brain_cls.decode_all or i < cfg.full_decoders
                clients[i] = await ArbiterClient.connect(url, name, token, decode=decode)
            except (TimeoutError, OSError, ConnectionError, RuntimeError) as exc:
                refusals[_refusal(exc)] += 1

    # Compile/load the client-side kernels (delta decoding, prediction) before the clock starts.
    replication_warmup()
    prediction_warmup()
    await asyncio.gather(*(connect(i) for i in range(cfg.count)))
    if refusals:
        log.warning("%d of %d bots could not join: %s", sum(refusals.values()), cfg.count, dict(refusals))
    live = [(i, c) for i, c in enumerate(clients) if c is not None]
    welcome = live[0][1].welcome if live else None
    world: dict[str, Any] = dict(welcome.world) if welcome else {}
    spec: dict[str, Any] = dict(welcome.spec) if welcome else {}
    if welcome is not None and not game:  # a server without /info: the welcome names the game
        brain_cls = brain_for(welcome.game)
    brain = brain_cls(cfg.count, rng, world, spec, cfg.brain_options, wall_s=time.time())
    decode_all = brain_cls.decode_all
    event_names = {int(k): str(v) for k, v in spec.get("events", {}).items()}
    move = spec.get("move", {"rule": "none"})
    move_keys = list(move.get("in", [])) if move.get("rule") in ("velocity", "thrust") else []
    cpu0 = _cpu()  # the driver's cost while playing, not while connecting
    t_start = loop.time()
    snaps0 = {i: c.snapshots for i, c in live}
    bytes0 = {i: (c.conn.bytes_in if c.conn else 0) for i, c in live}
    first_pos: dict[int, tuple[float, float]] = {}
    last_pos: dict[int, tuple[float, float]] = {}
    rtts: list[float] = []
    events: Counter[int] = Counter()

    # A few bots predict their own ship and reconcile with the server's snapshots, as game clients
    # do (netcode/prediction.py); their error and correction rate go into the report.
    # They also render everyone else through an interpolation buffer of two send intervals, and
    # report how often it ran dry (the render tick passed the newest snapshot: extrapolation).
    preds: dict[int, tuple[ShipPredictor, TickClock]] = {}
    interps: dict[int, Interpolator] = {}
    for i, c in live[: cfg.full_decoders]:
        w = c.welcome
        if w is None or not c.decode or not move_keys:
            continue
        pred, clock = ShipPredictor(move, w.tick_rate, epsilon=0.05), TickClock(w.tick_rate)
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
                events.update(e[0] for e in evs)
                brain.on_events(i, evs)
            snap = c.latest
            view = BotView(snap.tick, c.player, snap.entities) if snap is not None and c.decode else None
            values = brain.next_input(i, view)
            seq = c.send_fields(values)
            inputs_sent += 1
            if i in preds:
                pred, clock = preds[i]
                mx, my = float(values.get(move_keys[0], 0.0)), float(values.get(move_keys[1], 0.0))
                pred.send(seq, mx, my, clock.input_tick(now, c.session.rtt or 0.0))
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
                    sample = interp.sample(clock.render_tick(now, interp.delay_ticks))
                    interp_samples += 1
                    interp_starved += int(sample.extrapolated)
                    interp_entities += len(sample.ids)
            for i, c in watched:
                snap = c.latest
                if snap is not None and "x" in (snap.entities.dtype.names or ()):
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
    for _, c in live:
        events.update(e[0] for e in c.events)
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
        game=welcome.game if welcome else str(info.get("game", "")),
        connect_errors=dict(refusals),
        events={event_names.get(k, f"kind_{k}"): v for k, v in sorted(events.items())},
        brain=brain.summary(),
        bots=cfg.count,
        connected=n,
        connect_failures=sum(refusals.values()),
        duration_s=round(elapsed, 3),
        inputs_sent=inputs_sent,
        inputs_per_s=round(inputs_sent / elapsed, 1),
        inputs_target_per_s=round(n * cfg.input_rate, 1),
        snapshots=int(sum(c.snapshots - snaps0[i] for i, c in live)),
        snapshots_per_bot_s=round(float(np.mean(per_bot)) if per_bot else 0.0, 3),
        snapshots_per_bot_s_min=round(float(np.min(per_bot)) if per_bot else 0.0, 3),
        bytes_in_per_bot_s=round(bytes_in / elapsed / max(n, 1), 1),
        refused_seen=events.get(EV_REFUSED, 0),
        errors_seen=errors,
        closed_early=closed_early,
        moved=moved,
        decoders=min(cfg.full_decoders, n) if not decode_all else n,
        rtt_p50_ms=round(float(np.percentile(rt, 50)), 3),
        rtt_p99_ms=round(float(np.percentile(rt, 99)), 3),
        rtt_samples=len(rtts),
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
