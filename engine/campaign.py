"""A campaign: one game, one world, the input buffer of the next tick and who plays whom.

No sockets and no clock here: the server (engine/server.py) feeds inputs in and calls `tick()`;
tests and tools drive the same object directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sim.events import EventBuffer
from sim.game_api import Game
from sim.inputs import InputBatch
from sim.registry import make_game
from sim.statehash import state_hash
from sim.world import World

SLOT_MASK = (1 << 20) - 1


@dataclass(slots=True)
class TickResult:
    tick: int
    accepted: int
    refused: int
    # events grouped per player entity id, in emission order: (kind, a, b)
    events: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)


class Campaign:
    def __init__(
        self,
        game: str | Game,
        seed: int,
        config: Mapping[str, object] | None = None,
        campaign_id: str = "default",
        input_capacity: int | None = None,
    ) -> None:
        self.game: Game = make_game(game, config) if isinstance(game, str) else game
        self.campaign_id = campaign_id
        self.seed = int(seed)
        self.world: World = self.game.create_world(self.seed)
        cap = input_capacity or max(256, self.game.max_players * 8)
        self.inputs = InputBatch(cap)
        self.events = EventBuffer(max(1024, self.game.max_players * 8))
        self._record = np.zeros(self.game.capacity, dtype=self.game.record_dtype)
        self.players: dict[int, str] = {}  # entity id -> display name
        self._last_seq = self.world.arrays["last_seq"]

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def tick_count(self) -> int:
        return self.world.tick

    @property
    def full(self) -> bool:
        return len(self.players) >= self.game.max_players

    def join(self, name: str) -> int:
        eid = self.game.join(self.world)
        self.players[eid] = name
        return eid

    def leave(self, eid: int) -> None:
        if self.players.pop(eid, None) is not None:
            self.game.leave(self.world, eid)

    # -- inputs -----------------------------------------------------------------------------------
    def submit(
        self, eid: int, seq: int, client_tick: int, dx: float, dy: float, action: int = 0, arg: int = 0
    ) -> bool:
        """File an input for the next tick; False when the buffer is full (a flood)."""
        return self.inputs.add(eid, seq, client_tick, dx, dy, action, arg)

    def last_seq(self, eid: int) -> int:
        return int(self._last_seq[eid & SLOT_MASK])

    # -- the tick ---------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        inputs, events = self.inputs, self.events
        events.clear()
        self.game.step(self.world, inputs, events)
        n = inputs.n
        accepted = int(np.count_nonzero(inputs.accepted[:n])) if n else 0
        result = TickResult(self.world.tick, accepted, n - accepted)
        if events.n:
            grouped = result.events
            kinds, eids, a, b = events.kind, events.eid, events.a, events.b
            for i in range(events.n):
                eid = int(eids[i])
                if eid in self.players:
                    grouped.setdefault(eid, []).append((int(kinds[i]), int(a[i]), int(b[i])))
        inputs.clear()
        return result

    # -- replication ------------------------------------------------------------------------------
    def replicate(self) -> np.ndarray:
        """The replicated records of every live entity (a view valid until the next call)."""
        n = self.game.replicate(self.world, self._record)
        return self._record[:n]

    def state_hash(self) -> int:
        return state_hash(self.world)
