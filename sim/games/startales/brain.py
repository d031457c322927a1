"""Startales' bot brain: an honest player (engine/tools/bots.py drives it)."""

from __future__ import annotations

import math

import numpy as np

from sim.brain import BotView, Brain, unit
from sim.events import EV_ACHIEVEMENT, EV_BALANCE
from sim.games.startales.constants import (
    ACTION_BUILD,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    ACTION_STOP,
    EV_BUILT,
    EV_TRANSFER,
    KIND_PLANET,
    KIND_SHIP,
    scan_arg,
)

_IDLE: dict[str, float | int] = {"dx": 0.0, "dy": 0.0}


class StartalesBrain(Brain):
    """An honest player: fly to a planet, harvest, build when affordable, now and then give a
    little metal to a ship in view, claim each achievement the server granted, move on.

    Honest under lag: a spending action (BUILD, GIFT) is sent only when the last balance the
    server reported covers it and no other spend is unconfirmed (until its EV_BUILT/EV_TRANSFER,
    or 3 s if it was refused), so it can never be unaffordable however late the events arrive; HARVEST
    is asked once per arrival; transaction ids only grow (docs/fairplay.md).
    """

    decode_all = True

    def start(self, n: int) -> None:
        """Option `dwell_s`: seconds at a planet before flying on (default 10)."""
        world = self.world
        self.dwell_ticks = int(float(self.options.get("dwell_s", 10.0)) * float(world.get("tick_rate", 60)))
        self.target = np.full(n, -1, dtype=np.int64)
        self.harvesting = np.zeros(n, dtype=bool)
        self.harvest_since = np.zeros(n, dtype=np.int64)
        self.range = float(world.get("harvest_range", 60.0))
        self.cost_metal = int(world.get("build_cost_metal", 50))
        self.cost_crystal = int(world.get("build_cost_crystal", 0))
        self.balances = np.zeros((n, 2), dtype=np.int64)
        self.spend_pending_until = np.zeros(n, dtype=np.int64)  # tick; 0 = nothing unconfirmed
        self.claims: list[list[int]] = [[] for _ in range(n)]
        self.counts = {"built": 0, "gifts_confirmed": 0, "achievements": 0}
        # Transaction ids stay increasing across runs of the same accounts: seconds since 2025 × 64.
        self.txn = np.full(n, max(1, (int(self.wall_s) - 1_735_689_600) * 64), dtype=np.int64)

    def on_events(self, i: int, events: list[tuple[int, int, int]]) -> None:
        for kind, a, b in events:
            if kind == EV_BALANCE and 0 <= a < 2:
                self.balances[i, a] = b
            elif kind in (EV_BUILT, EV_TRANSFER):
                self.spend_pending_until[i] = 0
                self.counts["built" if kind == EV_BUILT else "gifts_confirmed"] += 1
            elif kind == EV_ACHIEVEMENT:
                self.claims[i].append(a)
                self.counts["achievements"] += 1

    def next_input(self, i: int, view: BotView | None) -> dict[str, float | int]:
        if view is None:
            return _IDLE
        if self.claims[i]:
            return {"dx": 0.0, "dy": 0.0, "a": ACTION_CLAIM, "g": self.claims[i].pop()}
        ents = view.entities
        mine = ents[ents["id"] == view.player]
        planets = ents[ents["kind"] == KIND_PLANET]
        if mine.size == 0 or planets.size == 0:
            return _IDLE
        x, y = float(mine["x"][0]), float(mine["y"][0])
        if self.target[i] < 0 or self.target[i] >= planets.size:
            # A new destination away from here: every trip is real flying, not parking.
            far = np.nonzero(np.hypot(planets["x"] - x, planets["y"] - y) > 2 * self.range)[0]
            pool = far if far.size else np.arange(planets.size)
            self.target[i] = int(pool[self.rng.integers(pool.size)])
        p = planets[self.target[i]]
        dx, dy = float(p["x"]) - x, float(p["y"]) - y
        dist = math.hypot(dx, dy)
        vx, vy = float(mine["vx"][0]), float(mine["vy"][0])
        if dist > self.range * 0.5:
            self.harvesting[i] = False
            scale = min(1.0, dist / 200.0) / max(dist, 1e-6)
            tx, ty = unit(dx * scale - vx * 0.02, dy * scale - vy * 0.02)  # steer, and brake on approach
            return {"dx": tx, "dy": ty}
        if math.hypot(vx, vy) >= 60.0:  # park before asking for anything at a planet
            tx, ty = unit(-vx * 0.01, -vy * 0.01)
            return {"dx": tx, "dy": ty}
        bal = self.balances[i]
        pending = self.spend_pending_until[i]
        free = pending == 0 or view.tick > pending
        if free and bal[0] >= self.cost_metal and bal[1] >= self.cost_crystal and self.rng.random() < 0.2:
            self.spend_pending_until[i] = view.tick + 180
            return {"dx": 0.0, "dy": 0.0, "a": ACTION_BUILD}
        if free and bal[0] >= 10 and self.rng.random() < 0.01:
            ships = ents[(ents["kind"] == KIND_SHIP) & (ents["id"] != view.player)]
            if ships.size:
                self.spend_pending_until[i] = view.tick + 180
                self.txn[i] += 1
                to = int(ships["id"][self.rng.integers(ships.size)])
                amount = 1 + int(self.rng.integers(5))
                return {"dx": 0.0, "dy": 0.0, "a": ACTION_GIFT, "g": scan_arg(to), "g3": amount, "tx": int(self.txn[i])}
        if not self.harvesting[i]:
            self.harvesting[i] = True
            self.harvest_since[i] = view.tick
            return {"dx": 0.0, "dy": 0.0, "a": ACTION_HARVEST}
        if view.tick - self.harvest_since[i] > self.dwell_ticks:  # enough of this planet: move on
            self.target[i] = -1
            self.harvesting[i] = False
            return {"dx": 0.0, "dy": 0.0, "a": ACTION_STOP}
        return _IDLE
