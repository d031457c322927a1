"""A campaign: one game, one world, the input buffer of the next tick and who plays whom.

No sockets and no clock here: the server (engine/server.py) feeds inputs in and calls `tick()`;
recovery and `arbiter replay` drive the same object from the journal with `apply_record()`, so the
live server and a replay run exactly the same code in the same order:

    joins (as they happened between two ticks) → leaves → step(inputs in arrival order)

Joins apply at once (a player needs its entity id for the welcome); leaves are deferred to the
start of the next tick so that the journal's "joins, then leaves" order is the order that happened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from sim.entities import SLOT_MASK
from sim.game_api import Game
from sim.inputs import InputBatch
from sim.registry import make_game
from sim.statehash import state_hash
from sim.world import META_PLAYER_LO, World

# A journal join record is "account" or "account\x00{restored progress as JSON}".
JOIN_PAYLOAD_SEP = "\x00"

# recorder(tick, joins, leaves, inputs) is called after each step, before the inputs are cleared.
Recorder = Callable[[int, list[tuple[int, str]], list[int], InputBatch], None]



class ReplayDivergenceError(RuntimeError):
    """A journal record does not reproduce what the live server did (e.g. another entity id)."""


@dataclass(slots=True)
class TickResult:
    tick: int
    accepted: int
    refused: int
    # events grouped per player entity id, in emission order: (kind, a, b)
    events: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    # what the validators flagged this tick: (kind, entity id, measured value, limit)
    violations: list[tuple[int, int, float, float]] = field(default_factory=list)


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
        self.config = dict(config or {})
        cap = input_capacity or max(256, self.game.max_players * 8)
        self.inputs = self.game.input_batch(cap)
        self.events = self.game.event_buffer(max(1024, self.game.max_players * 8))
        self._record = np.zeros(self.game.capacity, dtype=self.game.record_dtype)
        self.players: dict[int, str] = {}  # online: entity id -> display name
        self.accounts: dict[str, int] = {}  # every player ship in the world: account -> entity id
        self._pending_joins: list[tuple[int, str]] = []
        self._pending_leaves: list[int] = []
        self.recorder: Recorder | None = None
        self.world: World = self.game.create_world(self.seed)
        self._bind_world()

    def _bind_world(self) -> None:
        self._last_seq = self.world.arrays["last_seq"]
        self.player_lo = int(self.world.arrays["meta"][META_PLAYER_LO])

    def replace_world(self, world: World, accounts: Mapping[str, int]) -> None:
        """Adopt a restored world (recovery, replay from a snapshot)."""
        self.world = world
        self.accounts = dict(accounts)
        self.players.clear()
        self._pending_joins.clear()
        self._pending_leaves.clear()
        self.inputs.clear()
        self._bind_world()

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def tick_count(self) -> int:
        return self.world.tick

    @property
    def full(self) -> bool:
        return len(self.accounts) >= self.game.max_players

    def join(
        self, name: str, account: str | None = None, restore: Mapping[str, object] | None = None
    ) -> tuple[int, bool]:
        """Bring `account`'s ship into play; returns (entity id, resumed).

        `restore`: durable progress (e.g. from PostgreSQL) for a fresh ship; it travels in the
        journal's join record so that replay applies exactly the same state.

        An account whose ship is still in the world (after a crash, before it was reaped) gets the
        same entity back, without `restore`. An account has one ship: joining an account that is
        online is a caller's bug (the server serializes hellos per account and hands the ship over).
        """
        key = account or name
        if JOIN_PAYLOAD_SEP in key:  # it would smuggle a restore payload into the journal record
            raise ValueError("an account id may not contain NUL")
        eid = self.accounts.get(key)
        if eid is not None:
            if eid in self.players:
                raise ValueError(f"account {key!r} is already playing entity {eid}")
            self.players[eid] = name
            return eid, True
        eid = int(self.game.join(self.world))
        record_key = key
        if restore:
            self._restore(eid, restore)
            record_key = key + JOIN_PAYLOAD_SEP + json.dumps(dict(restore), sort_keys=True, separators=(",", ":"))
        self._pending_joins.append((eid, record_key))
        self.accounts[key] = eid
        self.players[eid] = name
        return eid, False

    def _restore(self, eid: int, progress: Mapping[str, object]) -> None:
        self.game.restore_progress(self.world, eid, progress)

    def leave(self, eid: int) -> None:
        """The player is gone: its ship leaves the world at the start of the next tick."""
        self.players.pop(eid, None)
        for key, e in list(self.accounts.items()):
            if e == eid:
                del self.accounts[key]
                self._pending_leaves.append(eid)
                break

    def player_value(self, eid: int, name: str) -> int | float | None:
        """A player ship's value of a world array: per-entity arrays are indexed by slot,
        per-player arrays (a game's `Player` fields) by slot - player_lo. None if absent."""
        arr = self.world.arrays.get(name)
        if arr is None:
            return None
        slot = eid & SLOT_MASK
        i = slot if len(arr) == self.world.capacity else slot - self.player_lo
        if not 0 <= i < len(arr):
            return None
        value: int | float = arr[i].item()
        return value

    def offline_ships(self) -> list[int]:
        """Ships in the world whose player is not connected (e.g. after a crash)."""
        return sorted(e for e in self.accounts.values() if e not in self.players)

    # -- inputs -----------------------------------------------------------------------------------
    def submit(self, eid: int, seq: int, client_tick: int, values: tuple[float | int, ...], bound: int = 0) -> bool:
        """File an input (the game's values in spec order; `bound`: its connection's rewind bound in
        ticks, 0 = none measured) for the next tick; False when the buffer is full (a flood)."""
        return self.inputs.add_values(eid, seq, client_tick, values, bound)

    def last_seq(self, eid: int) -> int:
        return int(self._last_seq[eid & SLOT_MASK])

    # -- the tick ---------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        joins, self._pending_joins = self._pending_joins, []
        leaves, self._pending_leaves = self._pending_leaves, []
        for eid in leaves:
            self.game.leave(self.world, eid)
        return self._step(joins, leaves)

    def _step(self, joins: list[tuple[int, str]], leaves: list[int]) -> TickResult:
        inputs, events = self.inputs, self.events
        events.clear()
        self.game.step(self.world, inputs, events)
        n = inputs.n
        accepted = int(np.count_nonzero(inputs.accepted[:n])) if n else 0
        result = TickResult(self.world.tick, accepted, n - accepted)
        if events.violations.n:
            result.violations = events.violations.rows()
        if events.n:
            grouped = result.events
            kinds, eids, a, b = events.kind, events.eid, events.a, events.b
            for i in range(events.n):
                eid = int(eids[i])
                if eid in self.players:
                    grouped.setdefault(eid, []).append((int(kinds[i]), int(a[i]), int(b[i])))
        if self.recorder is not None:
            self.recorder(self.world.tick, joins, leaves, inputs)
        inputs.clear()
        return result

    def apply_record(
        self,
        joins: list[tuple[int, str]],
        leaves: list[int],
        inputs: np.ndarray,
        tick: int,
        *,
        group_events: bool = True,
    ) -> TickResult:
        """Re-apply one journal record: the same joins, leaves and inputs, in the same order.

        The sim sees exactly what `tick()` would give it (the step is `game.step` on the same batch);
        only the bookkeeping around it is lighter. `group_events=False` skips grouping the tick's
        events per player (`TickResult.events` stays empty) when nobody reads them, e.g. recovery
        and replay without export. When grouping, a replay groups by every player ship in the world
        (`accounts`), since nobody is online during a replay.
        """
        if self.world.tick + 1 != tick:
            raise ReplayDivergenceError(f"record for tick {tick} applied at tick {self.world.tick}")
        if joins:
            for eid, record_key in joins:
                got = int(self.game.join(self.world))
                key, _, payload = record_key.partition(JOIN_PAYLOAD_SEP)
                if got != eid:
                    raise ReplayDivergenceError(f"tick {tick}: join of {key!r} gave entity {got}, journal says {eid}")
                if payload:
                    self._restore(eid, json.loads(payload))  # progress restored at that join
                self.accounts[key] = eid
        if leaves:
            for eid in leaves:
                self.game.leave(self.world, eid)
                for key, e in list(self.accounts.items()):
                    if e == eid:
                        del self.accounts[key]
        batch = self.inputs
        if len(inputs) > batch.capacity:
            raise ReplayDivergenceError(f"tick {tick}: {len(inputs)} inputs exceed the input buffer")
        batch.fill(inputs)
        return self._replay_step(joins, leaves, group_events)

    def _replay_step(self, joins: list[tuple[int, str]], leaves: list[int], group_events: bool) -> TickResult:
        """`_step` for a journal record: same sim call, recorder and clearing; grouping optional."""
        inputs, events = self.inputs, self.events
        events.clear()
        self.game.step(self.world, inputs, events)
        n = inputs.n
        accepted = int(np.count_nonzero(inputs.accepted[:n])) if n else 0
        result = TickResult(self.world.tick, accepted, n - accepted)
        if events.violations.n:
            result.violations = events.violations.rows()
        if group_events and events.n:
            owners = self.players or {e: k for k, e in self.accounts.items()}
            grouped = result.events
            m = events.n
            kinds, eids = events.kind[:m].tolist(), events.eid[:m].tolist()
            a, b = events.a[:m].tolist(), events.b[:m].tolist()
            for i, eid in enumerate(eids):
                if eid in owners:
                    grouped.setdefault(eid, []).append((kinds[i], a[i], b[i]))
        if self.recorder is not None:
            self.recorder(self.world.tick, joins, leaves, inputs)
        inputs.clear()
        return result

    # -- replication ------------------------------------------------------------------------------
    def replicate(self) -> np.ndarray:
        """The replicated records of every live entity (a view valid until the next call)."""
        n = self.game.replicate(self.world, self._record)
        return self._record[:n]

    def state_hash(self) -> int:
        return state_hash(self.world)

    def always_relevant(self) -> np.ndarray | None:
        return self.game.always_relevant(self.world)
