"""Bot brains: what a bot player sends each input (engine/tools/bots.py drives them).

A game names its brain in its declaration (`Game.brain`); `Brain` is the generic default and the
base of game brains. It works from the welcome alone (the `spec` of docs/protocol.md), so it can
play a game that is not installed where the bots run: the move keys random-walk a heading (turn by
U(-π/2, π/2) with p = 0.1, magnitude U[0.5, 1]); other float inputs are uniform within their legal
range; integer inputs (actions, targets) stay 0, because a random one is legal on the wire but
almost never in the game.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np


class BotView(Protocol):
    """What a bot sees: the newest decoded snapshot (`entities`, records of the welcome's dtype)."""

    tick: int
    player: int
    entities: np.ndarray


class Brain:
    """The generic brain (and the base of game brains); one object drives `n` bots."""

    decode_all: ClassVar[bool] = False  # False: most bots only count snapshots, a few decode them

    def __init__(
        self,
        n: int,
        rng: np.random.Generator,
        world: Mapping[str, Any],
        spec: Mapping[str, Any],
        options: Mapping[str, Any] | None = None,
        wall_s: float = 0.0,
    ) -> None:
        """`world` and `spec` are the welcome's; `options` are the game brain's own knobs; `wall_s`
        is the driver's wall clock at start (seconds since 1970), for ids that must keep growing
        across runs of the same accounts: sim/ reads no clock itself."""
        self.world = world
        self.wall_s = wall_s
        self.options = dict(options or {})
        self.fields: list[list[Any]] = [list(f) for f in spec.get("inputs", [])]
        move = spec.get("move", {})
        self.move_keys: list[str] = list(move.get("in", [])) if move.get("rule", "none") != "none" else []
        # Python's generator: a few scalar draws per input cost less than numpy's per-call overhead.
        self.rng = rng
        self.rand = random.Random(int(rng.integers(2**63)))
        self.heading = [self.rand.uniform(0.0, 2 * math.pi) for _ in range(n)]
        self.counts: dict[str, int] = {}
        self.start(n)

    def start(self, n: int) -> None:
        """A game brain's per-bot state for `n` bots (the welcome's `world`, `options` are set)."""

    def on_events(self, i: int, events: list[tuple[int, int, int]]) -> None:
        """The events bot i received since its last input (kind, a, b)."""

    def next_input(self, i: int, view: BotView | None) -> dict[str, float | int]:
        """Bot i's next input, by wire key (absent keys are 0). `view` is None for counting bots."""
        r = self.rand
        out: dict[str, float | int] = {}
        if self.move_keys:
            if r.random() < 0.1:
                self.heading[i] += r.uniform(-math.pi / 2, math.pi / 2)
            mag = r.uniform(0.5, 0.999)  # below 1: cos/sin of a full 1.0 can exceed it in float32 (unit())
            h = self.heading[i]
            out[self.move_keys[0]], out[self.move_keys[1]] = mag * math.cos(h), mag * math.sin(h)
        for key, kind, lo, hi in self.fields:
            if kind == "f32" and key not in out:
                out[key] = r.uniform(float(lo), float(hi))
        return out

    def summary(self) -> dict[str, int]:
        """What the bots got done (counted by the brain), for the bots' report."""
        return dict(self.counts)


def unit(dx: float, dy: float, limit: float = 0.999) -> tuple[float, float]:
    """(dx, dy) shortened to at most `limit`: a unit vector in float64 can exceed 1 in float32 (the
    server's precision) and be refused."""
    m = math.hypot(dx, dy)
    return (dx * limit / m, dy * limit / m) if m > limit else (dx, dy)
