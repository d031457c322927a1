"""The one way tests drive a world: a game, its world, an input batch and an event buffer.

    d = Driver("wander", {"npcs": 20, "max_players": 4})
    p = d.join()
    d.send(p, 1, 0, 1.0, 0.0)        # eid, seq, client tick, the game's input values in spec order
    d.step()                          # -> the tick's events; d.accepted, d.violations, d.log
    d.a["x"][d.slot(p)]

The `drive` fixture (conftest.py) hands out Drivers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from netcode.replication.schema import ReplicationSchema, schema_of
from persistence.campaign_store import CampaignStore
from persistence.journal_codec import campaign_format_meta
from sim.entities import SLOT_MASK
from sim.game_api import Game
from sim.registry import make_game

STARTALES_LAYOUT = make_game("startales").input_batch(1).dtype


class Driver:
    def __init__(
        self,
        game: str | Game,
        config: Mapping[str, object] | None = None,
        seed: int = 1,
        inputs: int = 256,
        events: int = 4096,
    ) -> None:
        self.game = make_game(game, config) if isinstance(game, str) else game
        self.world = self.game.create_world(seed)
        self.inputs = self.game.input_batch(inputs)
        self.events = self.game.event_buffer(events)
        self.accepted = np.zeros(0, dtype=np.uint8)  # of the last step, in batch order
        self.violations: list[tuple[Any, ...]] = []  # of the last step: (kind, eid, value, limit)
        self.log: list[tuple[int, ...]] = []  # every event so far: (tick, kind, eid, a, b)

    @property
    def a(self) -> dict[str, np.ndarray]:
        return self.world.arrays

    @property
    def tick(self) -> int:
        return self.world.tick

    def join(self) -> int:
        return self.game.join(self.world)

    def leave(self, eid: int) -> None:
        self.game.leave(self.world, eid)

    @staticmethod
    def slot(eid: int) -> int:
        return int(eid) & SLOT_MASK

    def p(self, eid: int) -> int:
        """The index of a player's per-player fields."""
        return self.slot(eid) - self.game.player_lo

    def send(self, eid: int, seq: int, ct: int | None, *values: float | int, bound: int = 0) -> None:
        """File an input for the next step (`ct` None: the current tick)."""
        assert self.inputs.add(eid, seq, self.tick if ct is None else ct, *values, bound=bound)

    def step(self, n: int = 1) -> list[tuple[int, ...]]:
        """Step n ticks; returns the last tick's events (kind, eid, a, b)."""
        rows: list[tuple[int, ...]] = []
        for _ in range(n):
            self.events.clear()
            self.game.step(self.world, self.inputs, self.events)
            self.accepted = self.inputs.accepted[: self.inputs.n].copy()
            self.violations = self.events.violations.rows()
            rows = self.events.rows()
            self.log += [(self.tick, *r) for r in rows]
            self.inputs.clear()
        return rows

    def replicate(self) -> np.ndarray:
        out = np.zeros(self.game.capacity, dtype=self.game.record_dtype)
        return out[: self.game.replicate(self.world, out)]


def startales_inputs(n: int) -> np.ndarray:
    """n zeroed journal input records of startales' layout (for store tests)."""
    return np.zeros(n, dtype=STARTALES_LAYOUT)


def open_store(data_dir: str | Path, campaign_id: str, **kw: Any) -> CampaignStore:
    """A campaign store whose metadata names startales' input layout (as `arbiter serve` writes it)."""
    store = CampaignStore.open(data_dir, campaign_id, **kw)
    if "journal_format" not in store.get_meta():
        store.set_meta(campaign_format_meta(STARTALES_LAYOUT))
    return store


def wander_schema(width: float = 1000.0, height: float = 1000.0) -> ReplicationSchema:
    """Wander's replication schema, for a world of another size if asked."""
    fields = make_game("wander").replicated_fields()
    sized = {"x": width, "y": height}
    return schema_of([(n, k, lo, sized.get(n, hi), step) for n, k, lo, hi, step in fields])
