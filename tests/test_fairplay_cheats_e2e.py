"""Fair play end to end, one cheat bot per class, all at once on one real server with the default
policy (docs/fairplay.md): each is detected (its kind in the evidence of its account), neutralized
(read from the world arrays while it plays), warned, kicked (4005), and — cheating on after every
reconnect — banned (err 21, close 4007); the ban holds at the next hello.

The "teleports" (`park`) are the test's god view placing a ship at a planet; they touch positions
only, never resources, so the books (ledger conservation) still have to balance.
"""

from __future__ import annotations

import asyncio

import msgpack

from engine.server import GameServer
from netcode.client import ArbiterClient
from netcode.protocol import CloseCode, ErrorCode
from sim.events import EV_ACHIEVEMENT
from sim.games.startales.constants import (
    ACH_VOYAGER,
    ACTION_BUILD,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    ACTION_STOP,
    EV_TRANSFER,
    HARVEST_PER_TICK,
    HARVEST_RANGE,
    HARVEST_SLACK,
    MAX_SPEED,
    TXN_APPLIED,
    TXN_DUPLICATE,
    TXN_RETRIES,
    scan_arg,
)
from tests.fairplay_e2e_util import (
    STATE_KINDS,
    Escalation,
    check_ladder,
    escalate,
    events_of,
    evidence_kinds,
    farthest_planet,
    pace,
    park,
    planets,
    pv,
)
from tests.serverutil import running_server, url, wait_for

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
        gift = {"g2": 0, "g3": 10, "tx": txn}

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
        variants = [gift, {**gift, "tx": txn - 1}, {**gift, "g3": 20}]
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
