"""Entity ids and the slot table over a World's arrays.

An entity id is a uint32 ``(generation << 20) | slot`` with generation in 1..4095. A slot's
``generation`` array holds the generation of its current (or last) occupant; a free slot whose
generation is already MAX_GEN is retired and never reused, so a stale id can never address a
reused slot.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Int
from sim.world import META_SPAWNS, World

SLOT_BITS: Final = 20
SLOT_MASK: Final = (1 << SLOT_BITS) - 1
MAX_CAPACITY: Final = 1 << SLOT_BITS
MAX_GEN: Final = 4095


class TableFullError(RuntimeError):
    """No free (non-retired) slot is left in the requested range."""


@njit(cache=True)
def make_id(slot: Int, gen: Int) -> Int:
    return np.uint32((np.int64(gen) << SLOT_BITS) | np.int64(slot))


@njit(cache=True)
def id_slot(eid: Int) -> Int:
    return np.int64(eid) & SLOT_MASK


@njit(cache=True)
def id_gen(eid: Int) -> Int:
    return np.int64(eid) >> SLOT_BITS


@njit(cache=True)
def resolve(eid: Int, alive: np.ndarray, generation: np.ndarray) -> int:
    """Slot of a live entity id, or -1 when the id is stale, dead or malformed."""
    e = np.int64(eid)
    slot = e & SLOT_MASK
    gen = e >> SLOT_BITS
    if gen == 0 or slot >= alive.shape[0]:
        return -1
    if alive[slot] == 0 or np.int64(generation[slot]) != gen:
        return -1
    return int(slot)


@njit(cache=True)
def spawn_slot(alive: np.ndarray, generation: np.ndarray, meta: np.ndarray, lo: Int, hi: Int) -> int:
    """From a kernel: occupy the lowest free slot of [lo, hi) (e.g. a projectile); the slot, or -1
    when none is free. The id is `make_id(slot, generation[slot])`."""
    for s in range(lo, hi):
        if alive[s] == 0 and generation[s] < MAX_GEN:
            generation[s] += 1
            alive[s] = 1
            meta[META_SPAWNS] += 1
            return s
    return -1


def ids_of(generation: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Entity ids (uint32) of the given slots from their generations."""
    return (generation[slots].astype(np.uint32) << SLOT_BITS) | slots.astype(np.uint32)


def add_entity_arrays(world: World) -> None:
    """The fields every entity table has: alive, generation, is_player, last_seq."""
    world.add("alive", np.uint8)
    world.add("generation", np.uint16)
    world.add("is_player", np.uint8)
    world.add("last_seq", np.uint32)


class EntityTable:
    """Spawn/despawn/lookup over ``world.arrays["alive"]`` and ``["generation"]`` (no copies)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.alive: np.ndarray = world.arrays["alive"]
        self.generation: np.ndarray = world.arrays["generation"]
        self.capacity = int(self.alive.shape[0])

    def _free_mask(self, lo: int, hi: int) -> np.ndarray:
        return (self.alive[lo:hi] == 0) & (self.generation[lo:hi] < MAX_GEN)

    def _range(self, lo: int, hi: int | None) -> tuple[int, int]:
        hi = self.capacity if hi is None else hi
        if not 0 <= lo <= hi <= self.capacity:
            raise ValueError(f"bad slot range [{lo}, {hi}) for capacity {self.capacity}")
        return lo, hi

    def _occupy(self, slots: np.ndarray) -> np.ndarray:
        gen = self.generation[slots].astype(np.uint32) + 1
        self.generation[slots] = gen
        self.alive[slots] = 1
        self.world.arrays["meta"][META_SPAWNS] += len(slots)
        return (gen << SLOT_BITS) | slots.astype(np.uint32)

    def spawn(self, lo: int = 0, hi: int | None = None) -> int:
        """Occupy the lowest free slot in [lo, hi) and return its new id; TableFullError if none."""
        lo, hi = self._range(lo, hi)
        free = self._free_mask(lo, hi)
        if not free.any():
            raise TableFullError(f"no free slot in [{lo}, {hi})")
        slot = lo + int(np.argmax(free))
        return int(self._occupy(np.array([slot], dtype=np.int64))[0])

    def spawn_many(self, n: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Occupy the n lowest free slots in [lo, hi); returns their ids (uint32)."""
        lo, hi = self._range(lo, hi)
        slots = lo + np.flatnonzero(self._free_mask(lo, hi))[:n]
        if len(slots) < n:
            raise TableFullError(f"only {len(slots)} of {n} free slots in [{lo}, {hi})")
        return self._occupy(slots.astype(np.int64))

    def slot_of(self, eid: int) -> int:
        """Slot of a live id, -1 for stale/dead/malformed ids."""
        eid = int(eid)
        slot, gen = eid & SLOT_MASK, eid >> SLOT_BITS
        if eid < 0 or gen == 0 or gen > MAX_GEN or slot >= self.capacity:
            return -1
        if self.alive[slot] == 0 or int(self.generation[slot]) != gen:
            return -1
        return slot

    def despawn(self, eid: int) -> bool:
        """Free the slot of a live id; False (and nothing changes) for a stale/dead id."""
        slot = self.slot_of(eid)
        if slot < 0:
            return False
        self.alive[slot] = 0
        return True

    def id_at(self, slot: int) -> int:
        """Id of the live entity in `slot` (-1 if the slot is free)."""
        if not self.alive[slot]:
            return -1
        return (int(self.generation[slot]) << SLOT_BITS) | slot

    def live_count(self) -> int:
        return int(np.count_nonzero(self.alive))
