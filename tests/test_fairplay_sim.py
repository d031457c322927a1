"""The validators as sim kernels: each cheat class is flagged and neutralized; honest timing is not."""

from __future__ import annotations

import numpy as np
import pytest

from sim.events import EV_REFUSED, REF_TOO_FAST
from sim.games.startales.constants import (
    ACH_FIRST_HARVEST,
    ACTION_BUILD,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    EV_TRANSFER,
    HARVEST_RANGE,
    LEDGER_GENESIS,
    RES_METAL,
    TXN_APPLIED,
    TXN_DUPLICATE,
    scan_arg,
)
from sim.violations import (
    V_BAD_ACTION,
    V_FORGED_CLAIM,
    V_HARVEST_RANGE,
    V_HARVEST_RATE,
    V_INPUT_RATE,
    V_LEDGER,
    V_THRUST,
    V_TIME,
    V_TXN_REPLAY,
    V_UNAFFORDABLE,
)
from tests.worlds import Driver


class Sim(Driver):
    """A startales (or wander) world driven tick by tick (the world driver), collecting every
    violation and event, with a seq per player."""

    def __init__(self, game: str = "startales", **config: object) -> None:
        cfg = {"planets": 8, "drones": 4, "max_players": 8, **config} if game == "startales" else config
        super().__init__(game, cfg, 7, inputs=512, events=1024)
        self.all_violations: list[tuple[int, int, float, float]] = []
        self.event_rows: list[tuple[int, ...]] = []
        self.seq: dict[int, int] = {}

    def join(self) -> int:
        eid = super().join()
        self.seq[eid] = 0
        return eid

    def put(self, eid: int, dx: float = 0.0, dy: float = 0.0, action: int = 0, arg: int = 0, *,
            ct: int | None = None, arg2: int = 0, arg3: int = 0, txn: int = 0) -> None:  # fmt: skip
        self.seq[eid] += 1
        self.send(eid, self.seq[eid], ct, dx, dy, action, arg, arg2, arg3, txn)

    def step(self, n: int = 1) -> list[tuple[int, ...]]:
        rows: list[tuple[int, ...]] = []
        for _ in range(n):
            rows = super().step()
            self.all_violations += self.violations
            self.event_rows += rows
        return rows

    def kinds(self, eid: int | None = None) -> list[int]:
        return [k for k, e, _, _ in self.all_violations if eid is None or e == eid]

    def park_at_planet(self, eid: int, k: int = 0) -> None:
        slot = self.slot(eid)
        self.a["x"][slot], self.a["y"][slot] = self.a["x"][k], self.a["y"][k] + 10.0
        self.a["last_x"][self.p(eid)], self.a["last_y"][self.p(eid)] = self.a["x"][slot], self.a["y"][slot]

    def give(self, eid: int, metal: int = 0, crystal: int = 0) -> None:
        """Test setup: balances as if harvested (moved from planet 0's deposit, so the books hold)."""
        p = self.p(eid)
        self.a["bal_metal"][p] += metal
        self.a["bal_crystal"][p] += crystal
        self.a["ledger"][LEDGER_GENESIS] += metal + crystal


def test_honest_inputs_raise_nothing_even_when_bunched_by_the_network() -> None:
    s = Sim()
    e = s.join()
    # 20 inputs/s, client_tick = the tick the client saw; delivered with 150 ± 50 ms jitter and a
    # 0.5 s stall every few seconds (so they arrive in clumps), for 2 minutes of simulated time.
    rng = np.random.default_rng(3)
    sent: list[tuple[int, int]] = []  # (arrival tick, client tick)
    arrival = 0
    for t in range(0, 7200, 3):
        delay = int(rng.uniform(6, 12)) + (30 if t % 240 < 30 else 0)
        arrival = max(arrival, t + delay)
        sent.append((arrival, max(0, t - 6)))
    i = 0
    for tick in range(7300):
        while i < len(sent) and sent[i][0] <= tick:
            s.put(e, 0.3, 0.0, ct=sent[i][1])
            i += 1
        s.step()
    assert i == len(sent)
    assert s.all_violations == []


def test_speed_hack_by_time_dilation_is_flagged_and_refused() -> None:
    s = Sim()
    honest, cheat = s.join(), s.join()
    s.step(5)
    start = s.tick
    for k in range(600):  # 10 s; the cheat's clock runs at 2x
        if k % 3 == 0:
            s.put(honest, 0.5, 0.0)
            s.put(cheat, 0.5, 0.0, ct=start + 2 * k)
        s.step()
    assert V_TIME in s.kinds(cheat) and s.kinds(honest) == []
    first = next(i for i, (kind, e, _, _) in enumerate(s.all_violations) if kind == V_TIME)
    assert s.all_violations[first][2] > s.all_violations[first][3]  # measured beyond the margin
    refused = [r for r in s.event_rows if r[0] == EV_REFUSED and r[1] == cheat and r[3] == REF_TOO_FAST]
    assert len(refused) > 30  # every input of the fast clock is refused once it is beyond the margin
    # Neutralized: the cheat gets no more movement than the honest ship (thrust is state, not per input).
    hs, cs = s.slot(honest), s.slot(cheat)
    assert abs(float(s.a["vx"][cs])) <= abs(float(s.a["vx"][hs])) + 1e-3


def test_input_flood_beyond_one_per_tick_is_flagged() -> None:
    s = Sim()
    e = s.join()
    for _ in range(120):
        for _ in range(3):  # 180 inputs/s against 60 ticks/s
            s.put(e, 0.1, 0.0)
        s.step()
    assert s.kinds(e).count(V_INPUT_RATE) > 100
    # A one-off burst within the credit (a network stall releasing 40 queued inputs) is fine.
    s2 = Sim()
    e2 = s2.join()
    s2.step(120)
    for _ in range(40):
        s2.put(e2, 0.1, 0.0)
    s2.step()
    assert s2.violations == []


def test_thrust_beyond_range_is_flagged_and_has_no_effect() -> None:
    s = Sim()
    e = s.join()
    s.put(e, 1.0, 1.0)
    s.step()
    assert s.kinds(e) == [V_THRUST] and s.all_violations[0][2] == pytest.approx(2**0.5)
    assert s.a["tx"][s.slot(e)] == 0.0


def test_harvest_out_of_range_flagged_only_beyond_the_slack() -> None:
    s = Sim()
    e = s.join()
    slot = s.slot(e)
    # Just out of range (a lagging client's honest mistake): refused, no violation.
    s.a["x"][slot], s.a["y"][slot] = s.a["x"][0] + HARVEST_RANGE + 20, s.a["y"][0]
    s.put(e, action=ACTION_HARVEST, arg=1)
    s.step()
    assert s.all_violations == [] and s.a["harvest_target"][s.p(e)] == 0
    # Far from every planet: a violation, and nothing harvested.
    s.a["x"][slot], s.a["y"][slot] = 2000.0, 2000.0
    s.a["x"][: s.game.cfg["planets"]] = 100.0
    s.a["y"][: s.game.cfg["planets"]] = 100.0
    s.put(e, action=ACTION_HARVEST)
    s.step(30)
    assert s.kinds(e) == [V_HARVEST_RANGE] and s.a["harvested"][s.p(e)] == 0


def test_harvest_request_spam_is_flagged_and_yields_no_more_than_the_rate() -> None:
    s = Sim()
    e = s.join()
    s.park_at_planet(e)
    for _ in range(60):
        s.put(e, action=ACTION_HARVEST)
        s.step()
    assert V_HARVEST_RATE in s.kinds(e)
    assert s.a["harvested"][s.p(e)] <= 5 * 60  # HARVEST_PER_TICK per tick, however often asked


def test_unaffordable_build_flagged_and_free_of_effect() -> None:
    s = Sim()
    e = s.join()
    s.give(e, metal=99, crystal=500)
    s.put(e, action=ACTION_BUILD)
    s.step()
    assert s.kinds(e) == [V_UNAFFORDABLE]
    p = s.p(e)
    assert (s.a["bal_metal"][p], s.a["bal_crystal"][p], s.a["buildings"][p]) == (99, 500, 0)


def test_transfer_is_idempotent_by_transaction_id() -> None:
    s = Sim()
    a, b = s.join(), s.join()
    s.give(a, metal=100)
    pa, pb = s.p(a), s.p(b)
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=30, txn=7)
    s.step()
    assert (s.a["bal_metal"][pa], s.a["bal_metal"][pb]) == (70, 30)
    # Honest retries of the same transfer (e.g. after a reconnect) are answered, and move nothing.
    for _ in range(3):
        s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=30, txn=7)
        s.step()
    statuses = [r[3] for r in s.event_rows if r[0] == EV_TRANSFER and r[1] == a]
    assert statuses == [TXN_APPLIED, TXN_DUPLICATE, TXN_DUPLICATE, TXN_DUPLICATE]
    assert s.all_violations == []
    # A replay beyond the retries, an older id, or another transfer under the same id: violations.
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=30, txn=7)
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=30, txn=5)
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=60, txn=7)
    s.step()
    assert s.kinds(a) == [V_TXN_REPLAY] * 3
    assert (s.a["bal_metal"][pa], s.a["bal_metal"][pb]) == (70, 30)
    # Beyond the balance, bad arguments: flagged, nothing moves; the books balance throughout.
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=71, txn=8)
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=9, arg3=1, txn=9)
    s.step()
    assert s.kinds(a)[3:] == [V_UNAFFORDABLE, V_BAD_ACTION]
    assert (s.a["bal_metal"][pa], s.a["bal_metal"][pb]) == (70, 30)
    assert V_LEDGER not in s.kinds()


def test_transfer_ids_stay_used_across_a_rejoin_through_durable_progress() -> None:
    s = Sim()
    a, b = s.join(), s.join()
    s.game.restore_progress(s.world, a, {"resources": {"0": 50}, "txn_last": 7})  # a new ship, same player
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=5, txn=7)
    s.put(a, action=ACTION_GIFT, arg=scan_arg(b), arg2=RES_METAL, arg3=5, txn=8)
    s.step()
    assert s.kinds(a) == [V_TXN_REPLAY]
    assert (s.a["bal_metal"][s.p(a)], s.a["bal_metal"][s.p(b)]) == (45, 5)


def test_forged_achievement_claim_is_flagged_and_grants_nothing() -> None:
    s = Sim()
    e = s.join()
    s.put(e, action=ACTION_CLAIM, arg=ACH_FIRST_HARVEST)
    s.step()
    assert s.kinds(e) == [V_FORGED_CLAIM] and s.a["achievements"][s.p(e)] == 0
    s.park_at_planet(e)
    s.put(e, action=ACTION_HARVEST)
    s.step(3)
    assert s.a["achievements"][s.p(e)] & (1 << ACH_FIRST_HARVEST)
    s.put(e, action=ACTION_CLAIM, arg=ACH_FIRST_HARVEST)  # earned: accepted, no violation
    s.step()
    assert s.kinds(e) == [V_FORGED_CLAIM]


def test_ledger_conservation_flags_resources_from_nowhere_once() -> None:
    s = Sim()
    e = s.join()
    s.park_at_planet(e)
    s.put(e, action=ACTION_HARVEST)
    s.step(20)
    assert s.all_violations == []  # harvesting moves deposits into balances: conserved
    s.a["bal_crystal"][s.p(e)] += 1000  # a bug or an exploit outside the rules
    s.step(5)
    assert s.kinds() == [V_LEDGER] and s.all_violations[0][2] == 1000
    # Restored progress enters the books as imported; a ship leaving takes its balances out.
    other = s.join()
    s.game.restore_progress(s.world, other, {"resources": {"0": 500, "1": 7}})
    s.game.leave(s.world, e)
    s.step(3)
    assert s.kinds() == [V_LEDGER]


def test_wander_shares_the_pacing_and_thrust_validators() -> None:
    s = Sim("wander", npcs=10)
    e = s.join()
    s.put(e, 1.0, 1.0)
    s.step()
    for k in range(300):
        s.put(e, 0.5, 0.0, ct=2 * k)
        s.step()
    kinds = s.kinds(e)
    assert kinds[0] == V_THRUST and V_TIME in kinds


def test_violations_replay_identically() -> None:
    def run() -> list[tuple[int, int, float, float]]:
        s = Sim()
        e = s.join()
        for k in range(200):
            s.put(e, 1.0 if k % 7 == 0 else 0.2, 0.9, ct=3 * k, action=ACTION_HARVEST if k % 5 == 0 else 0)
            s.step()
        return s.all_violations

    first = run()
    assert len(first) > 10 and run() == first
