"""Fair play end to end: real GameServers, real sockets, the default policy (docs/fairplay.md).

- Honest startales bots behind a jittery, bursty proxy are never flagged, and get real work done;
  an honest transfer retried over the same link moves resources once and is not a violation.
- One cheat bot per class, all at once on one server, each: detected (its kind in the evidence of
  its account), neutralized (read from the world arrays while it plays), warned, kicked (4005), and
  — cheating on after every reconnect — banned (err 21, close 4007); the ban holds at the next hello.
- Join-token abuse and connection floods are refused with their codes and scored against the address.
- A ban decided by the policy, and an operator's ban, survive a restart: SQLite on the data dir, and
  PostgreSQL when configured; the audit log keeps the decision with its tick range and violations.

The "teleports" below (`park`) are the test's god view placing a ship at a planet; they touch
positions only, never resources, so the books (ledger conservation) still have to balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgpack
import pytest

from engine.auth import AuthCode, KeyRing, TokenIssuer, TokenVerifier
from engine.bots import BotConfig, run_bots
from engine.fairplay.conn_limit import ConnLimitConfig
from engine.fairplay.kinds import V_BAD_TOKEN, V_TOKEN_REPLAY, kind_name
from engine.fairplay.referee import FairPlayConfig
from engine.server import GameServer
from netcode.client import ArbiterClient, ServerError
from netcode.protocol import CloseCode, ErrorCode, encode_hello
from netcode.ws_client import ws_connect
from sim.events import EV_ACHIEVEMENT
from sim.games.startales import scan_arg
from sim.games.startales.constants import (
    ACH_VOYAGER,
    ACTION_BUILD,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    ACTION_STOP,
    EV_RECEIVED,
    EV_TRANSFER,
    HARVEST_PER_TICK,
    HARVEST_RANGE,
    HARVEST_SLACK,
    MAX_SPEED,
    TXN_APPLIED,
    TXN_DUPLICATE,
    TXN_RETRIES,
)
from tests.pgutil import dsn as pg_dsn
from tests.pgutil import fresh_database
from tests.serverutil import running_server, url, wait_for
from tests.tcp_proxy import TcpProxy

STATE_KINDS = {"speed", "ledger", "negative_balance"}
SLOT_MASK = 0xFFFFF


# -- helpers ------------------------------------------------------------------------------------------
def pv(server: GameServer, eid: int, name: str) -> Any:
    """A player's value of a world array, while that ship is still the player's (None after it left)."""
    if eid not in server.by_eid:
        return None
    return server.campaign.player_value(eid, name)


def planets(server: GameServer, res: int | None = None, min_deposit: int = 3000) -> list[int]:
    a = server.campaign.world.arrays
    dep, kind = a["planet_deposit"], a["planet_res"]
    return [k for k in range(len(dep)) if dep[k] >= min_deposit and (res is None or int(kind[k]) == res)]


def park(server: GameServer, eid: int, planet: int) -> None:
    """Put a ship at rest on a planet (positions only; see the module docstring)."""
    a = server.campaign.world.arrays
    slot = eid & SLOT_MASK
    p = slot - server.campaign.player_lo
    a["x"][slot], a["y"][slot] = a["x"][planet], a["y"][planet]
    for name in ("vx", "vy", "tx", "ty"):
        a[name][slot] = 0.0
    a["last_x"][p], a["last_y"][p] = a["x"][slot], a["y"][slot]


def farthest_planet(server: GameServer, eid: int) -> tuple[int, float]:
    a = server.campaign.world.arrays
    slot = eid & SLOT_MASK
    n = len(a["planet_deposit"])
    d = [math.hypot(float(a["x"][k] - a["x"][slot]), float(a["y"][k] - a["y"][slot])) for k in range(n)]
    k = max(range(n), key=d.__getitem__)
    return k, d[k]


def events_of(c: ArbiterClient, kind: int) -> list[tuple[int, int, int]]:
    return [e for e in c.events if e[0] == kind]


async def pace(period: float, nxt: float) -> float:
    """Sleep until `nxt` (the send schedule of a bot, not a readiness wait); the next due time."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, nxt - loop.time()))
    return nxt + period


def evidence_kinds(server: GameServer, account: str) -> set[str]:
    rec = server.fairplay.referee.policy.record("acct:" + account)
    if rec is None:
        return set()
    return {kind_name(v.kind) for v in rec.evidence}


def server_with_verifier(
    verifier: TokenVerifier, **overrides: Any
) -> contextlib.AbstractAsyncContextManager[GameServer]:
    """tests/serverutil.running_server, with join tokens on."""
    return running_server(verifier, **overrides)


@dataclass
class Escalation:
    """What one cheating account went through, connection after connection."""

    account: str
    closes: list[int] = field(default_factory=list)  # close code of each connection
    errors: list[list[int]] = field(default_factory=list)  # err codes received on each connection
    refused_after_ban: int | None = None  # err code of the hello after the ban
    notes: dict[str, Any] = field(default_factory=dict)


Play = Callable[[ArbiterClient, int, Escalation], Awaitable[None]]


async def escalate(
    server: GameServer, account: str, play: Play, *, max_conns: int = 8, budget: float = 25.0
) -> Escalation:
    """Connect as `account` and cheat (`play`, until the server closes the connection), again and
    again, until the account is banned; then check that a new hello is refused."""
    out = Escalation(account)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    for rnd in range(max_conns):
        c = await ArbiterClient.connect(url(server), account)
        await asyncio.wait_for(play(c, rnd, out), max(0.1, deadline - loop.time()))
        code, _ = await c.wait_closed(5.0)
        out.closes.append(code)
        out.errors.append([e.code for e in c.errors])
        if code == CloseCode.BANNED:
            with pytest.raises(ServerError) as exc:
                await ArbiterClient.connect(url(server), account)
            out.refused_after_ban = exc.value.code
            return out
        assert loop.time() < deadline, f"{account}: not banned within {budget} s: {out}"
    raise AssertionError(f"{account}: not banned after {max_conns} connections: {out}")


def check_ladder(e: Escalation, also: frozenset[int] = frozenset()) -> None:
    """Warned, kicked (4005), then banned (err 21 + 4007); the next hello refused with 21. `also`:
    other close codes the class may meet on the way (the session's own limits on bad frames).

    The warning is checked when it can have been delivered: a warning decided when the connection
    was already closing (a frame beyond the transport's limit) reaches nobody, and the policy warns once."""
    allowed = {CloseCode.KICKED, CloseCode.BANNED} | also
    assert set(e.closes) <= allowed, e
    assert CloseCode.KICKED in e.closes, e
    kicked = e.closes.index(CloseCode.KICKED)
    assert e.closes[-1] == CloseCode.BANNED and kicked < len(e.closes) - 1, e
    if e.closes[0] != CloseCode.TOO_BIG:
        warned_at = next((i for i, errs in enumerate(e.errors) if ErrorCode.WARNED in errs), None)
        assert warned_at is not None and warned_at <= kicked, e
    assert ErrorCode.BANNED in e.errors[-1], e
    assert e.refused_after_ban == ErrorCode.BANNED, e


# -- 1a. honest players ---------------------------------------------------------------------------------
# Small and dense (planets of both resources ~100-150 u apart): every bot gets to harvest both and
# build within the run, even on a busy 2-core box.
SMALL_WORLD = {"max_players": 64, "width": 400, "height": 400, "planets": 6, "drones": 20}


async def test_honest_bots_behind_a_jittery_link_are_never_flagged() -> None:
    async with running_server(game="startales", game_config=SMALL_WORLD) as server:
        proxy = TcpProxy("127.0.0.1", server.port, latency=0.15, jitter=0.05, burst_every=(3.0, 6.0),
                         burst_extra=(0.15, 0.35), seed=1)  # fmt: skip
        await proxy.start()
        purl = f"ws://127.0.0.1:{proxy.port}/"
        try:
            bots = asyncio.create_task(
                run_bots(BotConfig(url=purl, game="startales", count=12, duration=18.0, dwell_s=1.5, seed=7))
            )
            gift = await honest_transfer_with_retries(server, purl)
            report = await bots
        finally:
            await proxy.close()
        referee = server.fairplay.referee
        assert not referee.violations, dict(referee.violations)
        assert not referee.decisions, dict(referee.decisions)
        assert len(referee.policy) == 0
        assert report.connected == 12 and report.connect_failures == 0, report
        assert report.closed_early == 0 and report.errors_seen == 0, report
        assert report.built > 0 and report.achievements > 0, report
        assert gift["applied"] == 1 and gift["duplicates"] == 2, gift


async def honest_transfer_with_retries(server: GameServer, purl: str) -> dict[str, int]:
    """Two honest players over the lossy link: a gift, retried twice as a client does when its
    confirmation is late, moves the resource exactly once and is answered as a duplicate."""
    giver = await ArbiterClient.connect(purl, "giver")
    taker = await ArbiterClient.connect(purl, "taker")
    try:
        park(server, giver.player, planets(server, res=0)[0])
        giver.send_input(0.0, 0.0, ACTION_HARVEST, 0)
        await wait_for(lambda: (pv(server, giver.player, "bal_metal") or 0) >= 40, 10)
        giver.send_input(0.0, 0.0, ACTION_STOP, 0)
        await wait_for(lambda: pv(server, giver.player, "harvest_target") == 0, 5)
        gift = (0.0, 0.0, ACTION_GIFT, scan_arg(taker.player))
        args = {"arg2": 0, "arg3": 25, "txn": 7}
        giver.send_input(*gift, **args)
        await asyncio.sleep(0.05)  # the client's retry timer: the confirmation takes a round trip (~0.3 s)
        giver.send_input(*gift, **args)
        giver.send_input(*gift, **args)
        await wait_for(lambda: len([e for e in events_of(giver, EV_TRANSFER) if e[1] == 7]) >= 3, 10)
        statuses = [e[2] for e in events_of(giver, EV_TRANSFER) if e[1] == 7]

        # The taker got it once. It never harvests, so its balance is what it was given (a bot may
        # have given it something too: those are counted from its events as well).
        def metal_given() -> int:
            return sum(b // 2 for _, _, b in events_of(taker, EV_RECEIVED) if b % 2 == 0)

        await wait_for(lambda: [e for e in events_of(taker, EV_RECEIVED) if e[1] == giver.player], 10)
        assert [e[2] for e in events_of(taker, EV_RECEIVED) if e[1] == giver.player] == [25 * 2 + 0]
        await wait_for(lambda: pv(server, taker.player, "bal_metal") == metal_given(), 10)
        return {"applied": statuses.count(TXN_APPLIED), "duplicates": statuses.count(TXN_DUPLICATE)}
    finally:
        await giver.close()
        await taker.close()


# -- 1b. cheats -------------------------------------------------------------------------------------------
CHEAT_WORLD = {"max_players": 64, "width": 2000, "height": 2000, "planets": 12, "drones": 20}
THRUST = (0.999, 0.0)


class Cheats:
    """One play per cheat class; each runs until the server closes its connection."""

    def __init__(self, server: GameServer, friend: ArbiterClient) -> None:
        self.server = server
        self.friend = friend
        self.loop = asyncio.get_running_loop()
        metal = planets(server, res=0)
        others = [k for k in planets(server) if k != metal[0]]
        self.metal_planet = metal[0]
        self.rate_planet = others[0]

    # speed hack: the client's clock runs at twice real time
    async def speed(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        s, eid = self.server, c.player
        assert c.welcome is not None
        join_tick, t0 = c.welcome.tick, self.loop.time()
        nxt = t0
        worst = 0.0
        while c.is_open:
            ct = join_tick + int(2 * (self.loop.time() - t0) * 60)
            c.send_input(*THRUST, client_tick=ct)
            dist = pv(s, eid, "distance")
            if dist is not None and s.campaign.tick_count > join_tick:
                worst = max(worst, dist / ((s.campaign.tick_count - join_tick) / 60))
            nxt = await pace(0.05, nxt)
        e.notes["max_mean_speed"] = max(worst, e.notes.get("max_mean_speed", 0.0))

    # thrust beyond range: (1, 1)
    async def thrust(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = self.loop.time()
        while c.is_open:
            c.send_input(1.0, 1.0)
            d = pv(self.server, c.player, "distance")
            if d is not None:
                e.notes["max_distance"] = max(d, e.notes.get("max_distance", 0.0))
            nxt = await pace(0.025, nxt)

    # input flood: 100 inputs/s (the sim takes one per tick), under the session's 120 msg/s bucket
    async def flood(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        s = self.server
        assert c.welcome is not None
        conn = s.by_eid[c.player]  # the server's side of this connection
        join_tick = c.welcome.tick
        refused0 = s.fairplay.referee.violations["input_rate"]
        nxt = self.loop.time()
        while c.is_open:
            for _ in range(5):
                c.send_input(0.1, 0.0)
            nxt = await pace(0.05, nxt)
        # Settle: the server saw the close and stepped the inputs it had filed.
        await wait_for(lambda: c.player not in s.by_eid, 5)
        t1 = s.campaign.tick_count
        await wait_for(lambda: s.campaign.tick_count > t1 + 1, 5)
        reached = conn.session.last_input_seq  # inputs decoded and filed for the sim (seq 1, 2, ...)
        rate_refused = s.fairplay.referee.violations["input_rate"] - refused0
        budget = (t1 - join_tick) + 60  # one input per tick, plus the 1 s burst credit
        e.notes.setdefault("flood", []).append((reached, reached - rate_refused, budget, conn.session.dropped))

    # HARVEST asked at a planet across the map
    async def harvest_range(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        k, dist = farthest_planet(self.server, c.player)
        assert dist > HARVEST_RANGE + HARVEST_SLACK + 100
        nxt, n = self.loop.time(), 0
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_HARVEST, k + 1)
            n += 1
            for name in ("harvested", "bal_metal", "bal_crystal", "harvest_target"):
                v = pv(self.server, c.player, name)
                assert v in (None, 0), (name, v)
            # the request-rate burst (8) at 20/s, then 3/s: never faster than the harvest-rate bound
            nxt = await pace(0.05 if n < 8 else 0.33, nxt)

    # HARVEST spammed at a planet in range: the request rate
    async def harvest_rate(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        s, eid = self.server, c.player
        park(s, eid, self.rate_planet)
        first = s.campaign.tick_count
        nxt = self.loop.time()
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_HARVEST, 0)
            got = pv(s, eid, "harvested")
            if got is not None:
                # never more than an honest harvester: HARVEST_PER_TICK per tick since the first request
                assert got <= HARVEST_PER_TICK * (s.campaign.tick_count - first + 1), got
                e.notes["harvested"] = max(got, e.notes.get("harvested", 0))
            nxt = await pace(0.025, nxt)

    # BUILD with nothing in the bank
    async def build(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = self.loop.time()
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_BUILD, 0)
            for name in ("buildings", "bal_metal", "bal_crystal"):
                v = pv(self.server, c.player, name)
                assert v in (None, 0), (name, v)
            nxt = await pace(0.05, nxt)

    # CLAIM of an achievement never earned
    async def claim(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = self.loop.time()
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_CLAIM, ACH_VOYAGER)
            assert pv(self.server, c.player, "achievements") in (None, 0)
            nxt = await pace(0.1, nxt)
        assert not events_of(c, EV_ACHIEVEMENT)

    # a transfer applied once, then replayed: identical retries beyond 3, an older id, another content
    async def replay(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        s, eid, friend = self.server, c.player, self.friend
        park(s, eid, self.metal_planet)
        c.send_input(0.0, 0.0, ACTION_HARVEST, 0)
        await wait_for(lambda: not c.is_open or (pv(s, eid, "bal_metal") or 0) >= 50, 10)
        c.send_input(0.0, 0.0, ACTION_STOP, 0)
        await wait_for(lambda: not c.is_open or pv(s, eid, "harvest_target") == 0, 5)
        if not c.is_open:
            return
        g0, f0 = pv(s, eid, "bal_metal"), pv(s, friend.player, "bal_metal")
        txn = 100 * (rnd + 1)
        to = scan_arg(friend.player)
        gift = {"arg2": 0, "arg3": 10, "txn": txn}

        def answers() -> list[int]:
            return [ev[2] for ev in events_of(c, EV_TRANSFER) if ev[1] == txn]

        c.send_input(0.0, 0.0, ACTION_GIFT, to, **gift)
        await wait_for(lambda: not c.is_open or answers() == [TXN_APPLIED], 5)
        for _ in range(TXN_RETRIES):  # honest-looking retries: answered, nothing moves
            c.send_input(0.0, 0.0, ACTION_GIFT, to, **gift)
        await wait_for(lambda: not c.is_open or len(answers()) == 1 + TXN_RETRIES, 5)
        if c.is_open:
            assert answers() == [TXN_APPLIED] + [TXN_DUPLICATE] * TXN_RETRIES
        e.notes.setdefault("applied", []).append(answers().count(TXN_APPLIED))
        variants = [gift, {**gift, "txn": txn - 1}, {**gift, "arg3": 20}]
        nxt, n = self.loop.time(), 0
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_GIFT, to, **variants[n % 3])
            n += 1
            g, f = pv(s, eid, "bal_metal"), pv(s, friend.player, "bal_metal")
            assert g in (None, g0 - 10), (g, g0)
            assert f == f0 + 10, (f, f0)
            nxt = await pace(0.1, nxt)
        assert answers().count(TXN_APPLIED) == 1

    # garbage frames after the welcome
    async def malformed(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = self.loop.time()
        while c.is_open:
            c.send_raw(b"\xc1 not msgpack")
            nxt = await pace(0.1, nxt)

    # frames beyond the size limits: one past the transport's (1009), then past the session's (err 8)
    async def oversized(self, c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = self.loop.time()
        if rnd == 0:
            c.send_raw(b"\x00" * 100_000)
        while c.is_open:
            c.send_raw(msgpack.packb({"t": "ping", "c": 0.0, "pad": b"\x00" * 4400}))
            nxt = await pace(0.1, nxt)


# account (and Cheats method): the violation kind it must be caught as, other close codes it may see
# (a bad frame is also an offence for the session, which closes with 4000 at its 5th; a frame beyond
# the transport's limit is closed with 1009 by the transport itself)
BAD_FRAME_CLOSES = frozenset({CloseCode.PROTOCOL_VIOLATION, CloseCode.TOO_BIG})
CLASSES: dict[str, tuple[str, frozenset[int]]] = {
    "speed": ("time_discrepancy", frozenset()),
    "thrust": ("thrust_range", frozenset()),
    "flood": ("input_rate", frozenset()),
    "harvest_range": ("harvest_range", frozenset()),
    "harvest_rate": ("harvest_rate", frozenset()),
    "build": ("unaffordable", frozenset()),
    "claim": ("forged_claim", frozenset()),
    "replay": ("transfer_replay", frozenset()),
    "malformed": ("malformed_frame", BAD_FRAME_CLOSES),
    "oversized": ("oversized_frame", BAD_FRAME_CLOSES),
}


async def test_each_cheat_is_detected_neutralized_kicked_and_banned() -> None:
    async with running_server(game="startales", game_config=CHEAT_WORLD) as server:
        referee = server.fairplay.referee
        friend = await ArbiterClient.connect(url(server), "friend")
        cheats = Cheats(server, friend)
        stop = asyncio.Event()

        async def honest_friend() -> None:
            nxt = asyncio.get_running_loop().time()
            while not stop.is_set():
                friend.send_input(0.0, 0.0)
                nxt = await pace(0.1, nxt)

        friendly = asyncio.create_task(honest_friend())
        names = list(CLASSES)
        results = await asyncio.gather(
            *(escalate(server, name, getattr(cheats, name)) for name in names), return_exceptions=True
        )
        stop.set()
        await friendly

        failures: list[str] = []
        for name, res in zip(names, results, strict=True):
            kind, also = CLASSES[name]
            try:
                if isinstance(res, BaseException):
                    raise res
                check_ladder(res, also)
                kinds = evidence_kinds(server, name)
                assert kinds == {kind}, (name, kinds)
                check_neutralized(name, res)
                if name == "oversized":
                    assert res.closes[0] == CloseCode.TOO_BIG, res  # the transport's refusal counted too
            except Exception as exc:  # report every class, not only the first
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
        assert not failures, "\n".join(failures)

        # Nothing any cheat did broke the rules of the world: no ship too fast, no resource created.
        assert not STATE_KINDS & set(referee.violations), dict(referee.violations)
        assert set(referee.violations) == {k for k, _ in CLASSES.values()}, dict(referee.violations)
        assert referee.decisions["ban"] >= len(CLASSES) and referee.decisions["kick"] >= len(CLASSES)
        # The honest bystander was never scored and is still playing.
        assert referee.policy.record("acct:friend") is None
        assert friend.is_open and ErrorCode.WARNED not in [e.code for e in friend.errors]
        n0 = friend.snapshots
        await wait_for(lambda: friend.snapshots > n0 + 2)
        # The audit log has each decision, with the evidence and the journal ticks that reproduce it.
        assert await referee.store.flush(5.0)
        for name in names:
            audit = await referee.store.read_audit(100, name)
            actions = [a.action for a in audit]
            assert {"warn", "kick", "ban"} <= set(actions), (name, actions)
            ban = next(a for a in audit if a.action == "ban")
            ev = ban.evidence
            assert ev["from_tick"] <= ev["to_tick"] <= server.campaign.tick_count, ev
            assert {v["name"] for v in ev["violations"]} == {CLASSES[name][0]}, ev
        await friend.close()


def check_neutralized(name: str, e: Escalation) -> None:
    n = e.notes
    if name == "speed":
        # a clock running twice as fast buys no speed: the mean speed stays under the game's cap
        assert n["max_mean_speed"] <= MAX_SPEED * 1.001, n
    elif name == "thrust":
        assert n.get("max_distance", 0.0) == 0.0, n  # every (1, 1) input was refused: the ship never moved
    elif name == "flood":
        # (reached, accepted, budget, dropped) per connection; the first one flooded until the kick, the
        # later ones were kicked or banned at their first excess input
        reached, _, budget, _ = n["flood"][0]
        assert reached > budget + 10, n  # the flood really was more than the sim takes...
        for _, accepted, budget, dropped in n["flood"]:
            assert dropped == 0, n  # (all of it reached the sim: the session's 120/s bucket dropped nothing)
            assert accepted <= budget + 2, n  # ...and no more than that took effect
    elif name == "harvest_rate":
        assert n.get("harvested", 0) > 0, n  # the requests within the bound did harvest, at the normal rate
    elif name == "replay":
        assert all(a == 1 for a in n["applied"]), n  # each transfer applied exactly once


# -- tokens and connection floods, scored against the address -----------------------------------------
RING = KeyRing.single("k" * 40)
OTHER_RING = KeyRing.single("o" * 40)
CAMP = "fp-e2e"


async def test_bad_and_replayed_tokens_are_refused_and_scored_against_the_address() -> None:
    issuer = TokenIssuer(RING)
    # Loopback addresses are only scored when asked to (by default a developer's misconfigured
    # tokens must not ban localhost); these tests connect from 127.0.0.1.
    fp = FairPlayConfig(conn=ConnLimitConfig(loopback=True, rate=0))  # scoring, not the connection limit
    async with server_with_verifier(TokenVerifier(RING, CAMP), game="wander", campaign=CAMP,
                                    game_config={"npcs": 5}, fairplay=fp) as server:  # fmt: skip
        referee = server.fairplay.referee
        good = issuer.issue("alice", CAMP, ttl=60)
        alice = await ArbiterClient.connect(url(server), "alice", good)
        cases = [
            (issuer.issue("eve", CAMP, ttl=60, now=time.time() - 3600), AuthCode.TOKEN_EXPIRED),
            (TokenIssuer(OTHER_RING).issue("eve", CAMP), AuthCode.TOKEN_BAD_SIGNATURE),
            (issuer.issue("eve", "another-campaign"), AuthCode.TOKEN_WRONG_CAMPAIGN),
            (good, AuthCode.TOKEN_REPLAYED),
        ]
        for token, code in cases:
            got: list[bytes] = []
            conn = await ws_connect(url(server), got.append)
            conn.send(encode_hello("eve", token))
            closed, _ = await asyncio.wait_for(conn.closed, 5)
            assert (closed, msgpack.unpackb(got[0])["code"]) == (CloseCode.UNAUTHORIZED, code), token
        assert referee.violations == {"bad_token": 3, "token_replay": 1}
        rec = referee.policy.record("ip:127.0.0.1")
        assert rec is not None and [v.kind for v in rec.evidence] == [V_BAD_TOKEN] * 3 + [V_TOKEN_REPLAY]
        assert referee.policy.score("ip:127.0.0.1", server.now()) == pytest.approx(3 * 6 + 10, abs=0.5)
        assert referee.policy.record("acct:alice") is None and alice.is_open

        # Keep forging: the address climbs the same ladder and is banned; then every new connection
        # from it is refused at once (err 21, close 4007), before any hello.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        forged = TokenIssuer(OTHER_RING)
        while True:
            got: list[bytes] = []
            conn = await ws_connect(url(server), got.append)
            conn.send(encode_hello("eve", forged.issue("eve", CAMP)))
            code, _ = await asyncio.wait_for(conn.closed, 5)
            first = msgpack.unpackb(got[0]) if got else {}
            assert first.get("code") == AuthCode.TOKEN_BAD_SIGNATURE, first
            if code == CloseCode.BANNED:  # the connection whose violation decided the ban
                break
            assert code == CloseCode.UNAUTHORIZED
            assert loop.time() < deadline, dict(referee.decisions)
        assert referee.decisions["ban"] == 1
        got = []
        conn = await ws_connect(url(server), got.append)  # refused at connect, before any hello
        code, _ = await asyncio.wait_for(conn.closed, 5)
        assert code == CloseCode.BANNED and msgpack.unpackb(got[0])["code"] == ErrorCode.BANNED
        bans = [b for b in referee.bans._bans.values() if b.ip_range]
        assert [b.ip_range for b in bans] == ["127.0.0.1/32"] and bans[0].account is None
        await wait_for(lambda: not alice.is_open)  # an address ban closes that address's sessions too
        await alice.close()


async def test_connection_flood_from_one_address_is_refused_with_4008() -> None:
    fp = FairPlayConfig(conn=ConnLimitConfig(loopback=True, rate=5, burst=5))
    async with running_server(game="wander", game_config={"npcs": 5}, fairplay=fp) as server:
        referee = server.fairplay.referee
        conns: list[tuple[Any, list[bytes]]] = []
        for _ in range(10):  # back to back: 5 fit the burst, then 5/s; the rest are a flood
            got: list[bytes] = []
            conns.append((await ws_connect(url(server), got.append), got))
        refused = referee.conn_limiter.refused
        assert refused >= 1
        await wait_for(lambda: sum(1 for c, _ in conns if c.closed.done()) == refused)
        for conn, got in conns:
            if conn.closed.done():
                code, _ = conn.closed.result()
                assert code == CloseCode.TOO_MANY_CONNECTIONS
                assert msgpack.unpackb(got[0])["code"] == ErrorCode.CONNECTION_REFUSED
                assert msgpack.unpackb(got[1])["t"] == "bye"
        assert all(c.is_open for c, _ in conns[:5])  # the burst was let in
        assert len(server.clients) == 10 - refused
        assert referee.violations == {"connection_flood": refused}
        assert referee.policy.score("ip:127.0.0.1", server.now()) == pytest.approx(10 * refused, abs=0.5)
        # those let in can play
        conn0, got0 = conns[0]
        conn0.send(encode_hello("early"))
        await wait_for(lambda: any(msgpack.unpackb(m)["t"] == "welcome" for m in got0))
        for conn, _ in conns:
            conn.abort()


# -- 1c. bans survive restarts ----------------------------------------------------------------------------
async def forge_until_banned(server: GameServer, account: str) -> Escalation:
    async def play(c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = asyncio.get_running_loop().time()
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_CLAIM, ACH_VOYAGER)
            nxt = await pace(0.1, nxt)

    return await escalate(server, account, play)


async def check_restart_keeps_bans(**cfg: Any) -> None:
    world = {"max_players": 16, "width": 1000, "height": 1000, "planets": 6, "drones": 10}
    async with running_server(game="startales", game_config=world, **cfg) as server:
        e = await forge_until_banned(server, "forger")
        check_ladder(e)
        admin_ban = server.fairplay.referee.ban("villain", None, "operator ban", None, "ops")
        assert admin_ban.account == "villain"
        banned_at_tick = server.campaign.tick_count
    async with running_server(game="startales", game_config=world, **cfg) as server:
        referee = server.fairplay.referee
        for account in ("forger", "villain"):
            with pytest.raises(ServerError) as exc:
                await ArbiterClient.connect(url(server), account)
            assert exc.value.code == ErrorCode.BANNED, account
        assert referee.refused_hellos == 2
        ok = await ArbiterClient.connect(url(server), "bystander")  # nobody else is affected
        await ok.next_snapshot()
        bans = {b.account: b for b in await referee.store.list_bans(time.time())}
        assert set(bans) == {"forger", "villain"}
        assert bans["forger"].created_by == "policy" and bans["forger"].until is not None
        assert bans["forger"].until > time.time() + 3000  # the default 1 h
        assert bans["villain"].until is None and bans["villain"].created_by == "ops"
        audit = await referee.store.read_audit(100, "forger")
        actions = [a.action for a in reversed(audit)]  # oldest first
        assert actions[0] == "warn" and "kick" in actions and actions[-1] == "ban", actions
        ev = audit[0].evidence
        assert 0 < ev["from_tick"] <= ev["to_tick"] <= banned_at_tick, ev
        assert ev["violations"] and {v["name"] for v in ev["violations"]} == {"forged_claim"}
        assert all(ev["from_tick"] <= v["tick"] <= ev["to_tick"] for v in ev["violations"])
        if cfg.get("data_dir"):  # how to reproduce it from the journal
            assert f"--from-tick {ev['from_tick']} --to-tick {ev['to_tick']}" in ev["replay"], ev["replay"]
        villain = await referee.store.read_audit(10, "villain")
        assert [a.action for a in villain] == ["ban"] and villain[0].evidence["by"] == "ops"
        await ok.close()


async def test_bans_survive_a_restart_sqlite(tmp_path: Any) -> None:
    await check_restart_keeps_bans(data_dir=str(tmp_path), campaign="persist")
    assert (tmp_path / "persist" / "fairplay.sqlite").exists()


async def test_bans_survive_a_restart_postgres() -> None:
    async with fresh_database("arbiter_fpe2e") as name:
        dsn = pg_dsn(name)
        # No data dir: the campaign lives in memory, so what survives can only have come from PostgreSQL.
        await check_restart_keeps_bans(data_dir="", campaign="persist-pg", pg_dsn=dsn)
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            rows = await conn.fetch("SELECT account_id FROM bans WHERE lifted_at IS NULL ORDER BY ban_id")
            assert [r["account_id"] for r in rows] == ["forger", "villain"]
        finally:
            await conn.close()


async def test_server_starts_and_bans_while_the_ban_store_is_unreachable() -> None:
    """PostgreSQL down at start: the server still serves; bans decided meanwhile hold in memory."""
    async with running_server(game="wander", game_config={"npcs": 5}, pg_dsn="postgresql://127.0.0.1:9/none",
                              campaign="pg-down") as server:  # fmt: skip
        c = await ArbiterClient.connect(url(server), "eve")
        server.fairplay.referee.ban("eve", None, "test", 60.0, "ops")
        await wait_for(lambda: not c.is_open)
        with pytest.raises(ServerError) as exc:
            await ArbiterClient.connect(url(server), "eve")
        assert exc.value.code == ErrorCode.BANNED
