"""Fair play: validation cost, false positives of honest players under jitter and loss, detection.

    python -m bench.fairplay [--json] [--bots 1000] [--minutes 10] [--players 1000]

- cost: one startales world with `--players` players, each sending one input per tick (a mix of
  thrust, harvest, build, gift and claim); `validation_us_per_input` = (step with the inputs − the
  same step without inputs) / inputs, i.e. validating and applying an input; `books_us_per_tick` =
  the state validators (speeds, negative balances, ledger conservation) over every player.
- honest: `--bots` honest players for `--minutes` of simulated time, headless and faster than real
  time, through a network model: 20 Hz inputs, one-way delays of 150 ± 50 ms each way, a stall of
  150-350 ms every 3-6 s per direction (everything sent meanwhile arrives together), 1 % of inputs
  lost and retransmitted 200 ms later, TCP order (no input overtakes an earlier one). A bot decides
  from what it has seen (its view lags by the downstream delay), exactly like engine/tools/bots.py's
  StartalesBrain: parks before harvesting, spends only what the last balance it saw covers with no
  spend unconfirmed, claims only achievements it was told about, and stamps inputs with the newest
  tick it saw. Every violation here is a false positive.
- detect: one cheat per class among honest players (sim classes) or against a session / token
  verifier / connection limiter (protocol classes); time to the first violation and to the policy's
  kick (engine/security/fairplay/policy.py defaults).

`--json` prints one object with at least `honest_bot_minutes`, `false_positives`, `cheat_classes`,
`detected`, `validation_us_per_input`, and writes bench/results/fairplay.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from bench.fairplay_fleet import HonestFleet
from engine.security.auth import AuthError, KeyRing, TokenIssuer, TokenVerifier
from engine.security.fairplay.conn_limit import ConnLimitConfig, ConnLimiter
from engine.security.fairplay.kinds import (
    V_BAD_TOKEN,
    V_CONN_FLOOD,
    V_FLOOD,
    V_HANDSHAKE,
    V_MALFORMED,
    V_OVERSIZED,
    V_TOKEN_REPLAY,
    kind_name,
)
from engine.security.fairplay.policy import Policy, Violation
from netcode.protocol import CloseCode, ErrorCode, encode_hello, encode_input
from netcode.session import ServerSession
from sim.entities import SLOT_MASK
from sim.events import EV_ACHIEVEMENT
from sim.games.startales.constants import ACTION_BUILD, ACTION_CLAIM, ACTION_GIFT, ACTION_HARVEST, MAX_SPEED, scan_arg
from sim.games.startales.game import Startales
from sim.games.startales.rules import books as startales_books
from sim.pacing import DISC as PACE_DISC
from sim.pacing import PACE_COLS, pace_limits
from sim.violations import (
    V_FORGED_CLAIM,
    V_HARVEST_RANGE,
    V_HARVEST_RATE,
    V_INPUT_RATE,
    V_THRUST,
    V_TIME,
    V_TXN_REPLAY,
    V_UNAFFORDABLE,
)
from sim.world import META_PLAYER_LO

RESULTS = Path(__file__).resolve().parent / "results" / "fairplay.json"
TICK_RATE = 60


# -- cost ----------------------------------------------------------------------------------------
def bench_cost(players: int, ticks: int) -> dict[str, Any]:
    game = Startales({"max_players": players, "planets": 48, "drones": 200})
    world = game.create_world(11)
    eids = np.array([game.join(world) for _ in range(players)], dtype=np.uint32)
    a = world.arrays
    lo = int(a["meta"][META_PLAYER_LO])
    a["bal_metal"][:players] = 10**6  # affordable builds and gifts: the full validation path runs
    a["bal_crystal"][:players] = 10**6
    a["ledger"][0] += 2 * 10**6 * players
    rng = np.random.default_rng(5)
    batch, events = game.input_batch(players * 2), game.event_buffer(players * 16)
    acts = rng.choice([0, 0, 0, 0, ACTION_HARVEST, ACTION_BUILD, ACTION_GIFT, ACTION_CLAIM], players)
    seq = np.zeros(players, dtype=np.int64)
    with_inputs, without = [], []
    for t in range(ticks):
        for i in range(players):
            seq[i] += 1
            act = int(acts[(i + t) % players])
            other = int(eids[(i + 1) % players])
            gift = act == ACTION_GIFT
            arg, txn = (scan_arg(other), int(seq[i])) if gift else (0, 0)
            batch.add(int(eids[i]), int(seq[i]), world.tick, 0.3, -0.2, act, arg, 0, 1, txn)
        events.clear()
        t0 = time.perf_counter()
        game.step(world, batch, events)
        with_inputs.append(time.perf_counter() - t0)
        batch.clear()
        events.clear()
        t0 = time.perf_counter()
        game.step(world, batch, events)
        without.append(time.perf_counter() - t0)
    books = []
    bound = {k: a[k] for k in ("alive", "generation", "is_player", "vx", "vy", "planet_deposit", "bal_metal",
                                "bal_crystal", "ledger")}  # fmt: skip
    for _ in range(ticks):
        t0 = time.perf_counter()
        startales_books(**bound, vio=events.violations.view, player_lo=game.params["player_lo"])
        books.append(time.perf_counter() - t0)
    w, wo = float(np.median(with_inputs)), float(np.median(without))
    del lo
    return {
        "players": players,
        "inputs_per_tick": players,
        "step_ms_with_inputs": round(w * 1e3, 3),
        "step_ms_without_inputs": round(wo * 1e3, 3),
        "validation_us_per_input": round((w - wo) / players * 1e6, 3),
        "validation_ms_per_tick": round((w - wo) * 1e3, 3),
        "books_us_per_tick": round(float(np.median(books)) * 1e6, 1),
    }


def bench_honest(bots: int, minutes: float, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    game = Startales({"max_players": bots + 8, "planets": 48, "drones": 200, "width": 4000, "height": 4000})
    world = game.create_world(seed)
    fleet = HonestFleet(game, world, bots, rng)
    batch, events = game.input_batch(bots * 16), game.event_buffer(bots * 16)
    policy = Policy()
    ticks = int(minutes * 60 * TICK_RATE)
    violations: dict[str, int] = {}
    decisions = 0
    inputs = refused = 0
    actions = np.zeros(8, dtype=np.int64)
    achievements = 0
    peak_disc = 0
    t0 = time.perf_counter()
    for now in range(ticks):
        fleet.decide(now)
        inputs += fleet.deliver(now, batch)
        if batch.n:
            np.add.at(actions, np.clip(batch.action[: batch.n], 0, 7), 1)
        events.clear()
        game.step(world, batch, events)
        refused += batch.n - int(np.count_nonzero(batch.accepted[: batch.n]))
        batch.clear()
        fleet.record()
        if now % TICK_RATE == 0:  # headroom: how close honest clocks come to the margin
            peak_disc = max(peak_disc, int(world.arrays["fp_pace"][PACE_DISC::PACE_COLS][fleet.slots].max()))
        if events.n:
            achievements += int(np.count_nonzero(events.kind[: events.n] == EV_ACHIEVEMENT))
        for kind, eid, value, limit in events.violations.rows():
            violations[kind_name(kind)] = violations.get(kind_name(kind), 0) + 1
            if policy.observe(Violation(kind, f"acct:{eid}", world.tick, value, limit), now / TICK_RATE):
                decisions += 1
    wall = time.perf_counter() - t0
    a = world.arrays
    return {
        "bots": bots,
        "sim_minutes": minutes,
        "honest_bot_minutes": round(bots * minutes, 1),
        "false_positives": int(sum(violations.values())),
        "false_positive_kinds": violations,
        "policy_decisions": decisions,
        "inputs": inputs,
        "inputs_refused": refused,
        "harvests": int(actions[ACTION_HARVEST]),
        "builds": int(a["buildings"].sum()),
        "gifts": int(actions[ACTION_GIFT]),
        "claims": int(actions[ACTION_CLAIM]),
        "achievements": achievements,
        "stalls": fleet.up.stalls + fleet.down.stalls,
        "peak_time_discrepancy_s": round(peak_disc / TICK_RATE, 3),  # sampled each second
        "time_margin_s": pace_limits(TICK_RATE)[1] / TICK_RATE,
        "wall_s": round(wall, 1),
        "speedup_vs_real_time": round(minutes * 60 / wall, 1),
    }


# -- detection -----------------------------------------------------------------------------------
Cheat = Callable[[int, int, "CheatWorld"], None]


class CheatWorld:
    """A small world with honest players and one cheater; the cheater's inputs come from a script."""

    def __init__(self) -> None:
        self.game = Startales({"max_players": 32, "planets": 12, "drones": 20, "width": 2000, "height": 2000})
        self.world = self.game.create_world(3)
        self.fleet = HonestFleet(self.game, self.world, 16, np.random.default_rng(4))
        self.cheat = self.game.join(self.world)
        self.victim = int(self.fleet.eids[0])
        a = self.world.arrays
        self.cp = (self.cheat & SLOT_MASK) - int(a["meta"][META_PLAYER_LO])
        self.seq = 0
        self.sent = self.accepted = 0  # the cheater's inputs, and how many the sim applied
        self.batch, self.events = self.game.input_batch(4096), self.game.event_buffer(4096)

    def send(self, dx: float = 0.0, dy: float = 0.0, act: int = 0, arg: int = 0, ct: int | None = None,
             amount: int = 0, txn: int = 0) -> None:  # fmt: skip
        self.seq += 1
        self.sent += 1
        self.batch.add(self.cheat, self.seq, self.world.tick if ct is None else ct, dx, dy, act, arg, 0, amount, txn)

    def park(self, planet: int = 0) -> None:
        a, s = self.world.arrays, self.cheat & SLOT_MASK
        a["x"][s], a["y"][s], a["vx"][s], a["vy"][s] = a["x"][planet], a["y"][planet] + 5, 0.0, 0.0


def _speed_hack(t: int, start: int, w: CheatWorld) -> None:
    if t % 3 == 0:
        w.send(0.5, 0.0, ct=start + 2 * t)


def _thrust(t: int, start: int, w: CheatWorld) -> None:
    if t % 3 == 0:
        w.send(1.0, 1.0)


def _flood(t: int, start: int, w: CheatWorld) -> None:
    for _ in range(2):  # 120 inputs/s: at the session's message limit, twice the sim's input rate
        w.send(0.2, 0.0)


def _harvest_far(t: int, start: int, w: CheatWorld) -> None:
    if t == 0:
        a, s = w.world.arrays, w.cheat & SLOT_MASK
        far = np.argmax(np.min(np.hypot(a["x"][:12, None] - np.arange(0, 2000, 50)[None, :], 0), axis=0))
        a["x"][s], a["y"][s] = float(far * 50), 1000.0
        a["x"][:12] = np.where(np.abs(a["x"][:12] - far * 50) < 400, a["x"][:12] + 800, a["x"][:12]) % 2000
    if t % 30 == 0:
        w.send(act=ACTION_HARVEST)


def _harvest_spam(t: int, start: int, w: CheatWorld) -> None:
    if t == 0:
        w.park()
    if t % 3 == 0:
        w.send(act=ACTION_HARVEST)


def _unaffordable(t: int, start: int, w: CheatWorld) -> None:
    if t % 30 == 0:
        w.send(act=ACTION_BUILD)


def _replay_txn(t: int, start: int, w: CheatWorld) -> None:
    if t == 0:
        a = w.world.arrays
        a["bal_metal"][w.cp] += 100
        a["ledger"][0] += 100
    if t % 6 == 0:
        w.send(act=ACTION_GIFT, arg=scan_arg(w.victim), amount=10, txn=1)


def _forged_claim(t: int, start: int, w: CheatWorld) -> None:
    if t % 30 == 0:
        w.send(act=ACTION_CLAIM, arg=2)


def _speed(w: CheatWorld) -> float:
    a, s = w.world.arrays, w.cheat & SLOT_MASK
    return float(np.hypot(a["vx"][s], a["vy"][s]))


SIM_CHEATS: dict[str, tuple[Cheat, int, Callable[[CheatWorld], bool]]] = {
    # name: (script, violation kind, neutralized?)
    # the dilated clock's inputs are refused once it runs ahead, and the ship is no faster
    "speed_hack": (_speed_hack, V_TIME, lambda w: w.accepted < w.sent and _speed(w) <= MAX_SPEED * 1.0001),
    "thrust_beyond_range": (_thrust, V_THRUST, lambda w: w.world.arrays["tx"][w.cheat & SLOT_MASK] == 0.0),
    # no more inputs applied than one per tick plus the burst credit
    "input_flood": (_flood, V_INPUT_RATE, lambda w: w.accepted <= w.world.tick + pace_limits(TICK_RATE)[0]),
    "harvest_out_of_range": (_harvest_far, V_HARVEST_RANGE, lambda w: w.world.arrays["harvested"][w.cp] == 0),
    "harvest_too_fast": (
        _harvest_spam,
        V_HARVEST_RATE,
        lambda w: w.world.arrays["harvested"][w.cp] <= 5 * w.world.tick,
    ),
    "unaffordable_build": (_unaffordable, V_UNAFFORDABLE, lambda w: w.world.arrays["buildings"][w.cp] == 0),
    "transfer_replay": (_replay_txn, V_TXN_REPLAY, lambda w: w.world.arrays["bal_metal"][w.cp] == 90),
    "forged_achievement": (_forged_claim, V_FORGED_CLAIM, lambda w: w.world.arrays["achievements"][w.cp] == 0),
}


def detect_sim(name: str, seconds: float = 30.0) -> dict[str, Any]:
    script, kind, neutralized = SIM_CHEATS[name]
    w = CheatWorld()
    policy = Policy()
    subject = f"acct:{w.cheat}"
    start = w.world.tick
    first = kick = None
    honest_violations = 0
    for t in range(int(seconds * TICK_RATE)):
        w.fleet.decide(t)
        w.fleet.deliver(t, w.batch)
        script(t, start, w)
        w.events.clear()
        w.game.step(w.world, w.batch, w.events)
        n = w.batch.n
        w.accepted += int(np.count_nonzero(w.batch.accepted[:n][w.batch.eid[:n] == w.cheat]))
        w.batch.clear()
        w.fleet.record()
        for k, eid, value, limit in w.events.violations.rows():
            if eid != w.cheat:
                honest_violations += 1
                continue
            if k == kind and first is None:
                first = t
            d = policy.observe(Violation(k, subject, w.world.tick, value, limit), t / TICK_RATE)
            if d is not None and d.action in ("kick", "ban") and kick is None:
                kick = t
        if first is not None and kick is not None:
            break
    return {
        "class": name,
        "detected": first is not None,
        "neutralized": bool(neutralized(w)),
        "time_to_detection_s": None if first is None else round(first / TICK_RATE, 3),
        "time_to_kick_s": None if kick is None else round(kick / TICK_RATE, 3),
        "honest_violations": honest_violations,
    }


def _session(now: float = 0.0) -> ServerSession:
    s = ServerSession(opened_at=now, inputs=Startales.inputs)
    s.receive(encode_hello("cheat"), now)
    s.accept(1, 0, 60, 20, "startales", {}, [("id", "<u4")])
    return s


def detect_protocol() -> list[dict[str, Any]]:
    """Protocol classes: the session, the token verifier and the connection limiter (Sans-I/O).
    A step returns (flagged, neutralized): whether the abuse was seen, and whether it got nothing
    through (no event reached the engine, the token or connection was refused, the flood was cut)."""
    rows: list[dict[str, Any]] = []

    def run(
        name: str, kind: int, step: Callable[[float], tuple[bool, bool]], seconds: float = 30.0, dt: float = 0.01
    ) -> None:
        policy, first, kick, t, neutral = Policy(), None, None, 0.0, True
        while t < seconds and kick is None:
            flagged, held = step(t)
            neutral &= held
            if flagged:
                first = t if first is None else first
                d = policy.observe(Violation(kind, "ip:203.0.113.9", 0, 1.0, 0.0), t)
                if d is not None and d.action in ("kick", "ban"):
                    kick = t
            t += dt
        rows.append({
            "class": name, "kind": kind_name(kind), "detected": first is not None, "neutralized": neutral,
            "time_to_detection_s": None if first is None else round(first, 3),
            "time_to_kick_s": None if kick is None else round(kick, 3),
        })  # fmt: skip

    flood = _session()
    seq = [0]

    passed = [0]

    def flood_step(t: float) -> tuple[bool, bool]:
        before = flood.offences
        for _ in range(10):  # 1000 messages/s
            seq[0] += 1
            passed[0] += len(flood.receive(encode_input(seq[0], 0, {"dx": 0.1, "dy": 0.0}), t))
        flood.data_to_send()
        # Only the bucket's rate (and its burst) reaches the engine.
        return flood.offences > before and flood.last_offence == ErrorCode.RATE_LIMITED, (
            passed[0] <= flood.rate * t + flood.burst + 1
        )

    run("message_flood", V_FLOOD, flood_step)

    def offence_step(payload: bytes, code: ErrorCode) -> Callable[[float], tuple[bool, bool]]:
        def step(t: float) -> tuple[bool, bool]:
            s = _session(t)
            events = s.receive(payload, t)
            return s.offences == 1 and s.last_offence == code, events == []

        return step

    run("malformed_frame", V_MALFORMED, offence_step(b"\xc1\xff garbage", ErrorCode.MALFORMED), dt=0.5)
    big = msgpack.packb({"t": "in", "s": 1, "ct": 0, "dx": 0.0, "dy": 0.0, "pad": "x" * 8000})
    run("oversized_frame", V_OVERSIZED, offence_step(big, ErrorCode.TOO_LARGE), dt=0.5)

    def handshake_step(t: float) -> tuple[bool, bool]:
        s = ServerSession(opened_at=t - 6.0)
        s.poll(t)
        closed = s.close_code == CloseCode.HANDSHAKE_TIMEOUT
        return closed, closed

    run("handshake_timeout", V_HANDSHAKE, handshake_step, dt=1.0)

    ring = KeyRing.generate()
    issuer = TokenIssuer(ring)
    verifier = TokenVerifier(ring, "c1")
    other = TokenIssuer(KeyRing.generate())
    used = issuer.issue("eve", "c1")
    verifier.verify(used)
    tokens = {
        "token_expired": (issuer.issue("eve", "c1", ttl=1, now=time.time() - 3600), V_BAD_TOKEN),
        "token_forged": (other.issue("eve", "c1"), V_BAD_TOKEN),
        "token_other_campaign": (issuer.issue("eve", "c2"), V_BAD_TOKEN),
        "token_replayed": (used, V_TOKEN_REPLAY),
    }
    for name, (tok, kind) in tokens.items():

        def token_step(t: float, tok: str = tok) -> tuple[bool, bool]:
            try:
                verifier.verify(tok)
            except AuthError:
                return True, True
            return False, False  # accepted: a replayed or forged token got in

        run(name, kind, token_step, dt=0.5)

    lim = ConnLimiter(ConnLimitConfig(loopback=True))
    admitted = [0]

    def conn_step(t: float) -> tuple[bool, bool]:
        refused = lim.allow("203.0.113.9", t) is not None
        admitted[0] += not refused
        # 500 connections/s offered: only the rate and the burst get in
        return refused, admitted[0] <= lim.cfg.rate * t + lim.cfg.burst + 1

    run("connection_flood", V_CONN_FLOOD, conn_step, dt=0.002)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bots", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of the honest run")
    ap.add_argument("--players", type=int, default=1000, help="players of the cost run")
    ap.add_argument("--cost-ticks", type=int, default=300)
    args = ap.parse_args()
    Startales().warmup()
    cost = bench_cost(args.players, args.cost_ticks)
    honest = bench_honest(args.bots, args.minutes)
    cheats = [detect_sim(name) for name in SIM_CHEATS] + detect_protocol()
    detected = sum(1 for c in cheats if c["detected"] and c["neutralized"])
    out = {
        "honest_bot_minutes": honest["honest_bot_minutes"],
        "false_positives": honest["false_positives"],
        "cheat_classes": len(cheats),
        "detected": detected,
        "detection_rate": round(detected / len(cheats), 3),
        "validation_us_per_input": cost["validation_us_per_input"],
        "cost": cost,
        "honest": honest,
        "cheats": cheats,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"validation at {cost['players']} players, {cost['inputs_per_tick']} inputs/tick: "
              f"{cost['validation_us_per_input']} µs/input, {cost['validation_ms_per_tick']} ms/tick; "
              f"books {cost['books_us_per_tick']} µs/tick")  # fmt: skip
        h = honest
        print(f"honest: {h['honest_bot_minutes']} bot-minutes ({h['bots']} bots × {h['sim_minutes']} min, "
              f"{h['speedup_vs_real_time']}× real time): {h['false_positives']} false positives "
              f"{h['false_positive_kinds']}; {h['harvests']} harvests, {h['builds']} builds, "
              f"{h['gifts']} gifts, {h['claims']} claims, {h['stalls']} stalls; peak time discrepancy "
              f"{h['peak_time_discrepancy_s']} s of a {h['time_margin_s']} s margin")  # fmt: skip
        print(f"{'class':24} {'detected':>8} {'neutral':>8} {'first (s)':>10} {'kick (s)':>9}")
        for c in cheats:
            print(f"{c['class']:24} {c['detected']!s:>8} {c['neutralized']!s:>8} "
                  f"{c['time_to_detection_s']!s:>10} {c['time_to_kick_s']!s:>9}")  # fmt: skip
        print(f"detected {detected}/{len(cheats)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
