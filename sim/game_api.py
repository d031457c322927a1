"""The Game protocol: what the engine needs from a game (see docs/internals.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from sim.events import EventBuffer
from sim.inputs import InputBatch
from sim.world import World


@runtime_checkable
class Game(Protocol):
    name: str
    record_dtype: np.dtype  # replicated wire record, packed, little-endian; first field 'id' <u4
    capacity: int  # entity slots of a world of this game (= length of every entity array)
    max_players: int

    def __init__(self, config: Mapping[str, object] | None = None) -> None: ...

    def constants(self) -> dict[str, float | int | str]:
        """World constants sent in the welcome."""
        ...

    def create_world(self, seed: int) -> World:
        """Campaign creation from a seed."""
        ...

    def join(self, world: World) -> int:
        """Spawn a player ship, return its entity id."""
        ...

    def leave(self, world: World, eid: int) -> None:
        """Despawn it (a stale or non-player id is ignored)."""
        ...

    def step(self, world: World, inputs: InputBatch, events: EventBuffer) -> None:
        """Apply one tick: validate and apply inputs (sets inputs.accepted), rules, integrate."""
        ...

    def replicate(self, world: World, out: np.ndarray) -> int:
        """Fill `out` (record_dtype, len >= capacity) with every live entity; return the count."""
        ...

    def warmup(self) -> None:
        """Compile/load every kernel (called at boot)."""
        ...
