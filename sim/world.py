"""The world: a bag of named numpy arrays, scalars included (``meta``), hashable and savable."""

from __future__ import annotations

import io
from typing import Final

import numpy as np
from numpy.typing import DTypeLike

# layout of arrays["meta"] (int64)
META_TICK: Final = 0
META_SEED: Final = 1  # the uint64 seed's bits
META_SPAWNS: Final = 2  # spawn counter (every EntityTable spawn increments it)
META_CAPACITY: Final = 3
META_NPC_LO: Final = 4  # NPC slot range [lo, hi)
META_NPC_HI: Final = 5
META_PLAYER_LO: Final = 6  # players live in [player_lo, capacity)
META_LEN: Final = 8

U64_MASK: Final = (1 << 64) - 1


class World:
    """Every piece of a campaign's state as named numpy arrays; no per-entity objects."""

    def __init__(self, capacity: int, seed: int) -> None:
        if capacity < 0 or capacity > (1 << 20):
            raise ValueError("capacity must be in 0..2**20")
        self.arrays: dict[str, np.ndarray] = {}
        meta = np.zeros(META_LEN, dtype=np.int64)
        meta[META_SEED] = np.array([int(seed) & U64_MASK], dtype=np.uint64).view(np.int64)[0]
        meta[META_CAPACITY] = capacity
        self.arrays["meta"] = meta

    # -- scalars ----------------------------------------------------------------------------------
    @property
    def meta(self) -> np.ndarray:
        return self.arrays["meta"]

    @property
    def capacity(self) -> int:
        return int(self.arrays["meta"][META_CAPACITY])

    @property
    def seed(self) -> int:
        return int(self.arrays["meta"][META_SEED : META_SEED + 1].view(np.uint64)[0])

    @property
    def tick(self) -> int:
        return int(self.arrays["meta"][META_TICK])

    @tick.setter
    def tick(self, value: int) -> None:
        self.arrays["meta"][META_TICK] = value

    @property
    def spawn_counter(self) -> int:
        return int(self.arrays["meta"][META_SPAWNS])

    # -- arrays -----------------------------------------------------------------------------------
    def add(self, name: str, dtype: DTypeLike, length: int | None = None, fill: int | float = 0) -> np.ndarray:
        """Allocate a 1-D array (length defaults to capacity) filled with `fill`; returns it."""
        if name in self.arrays:
            raise KeyError(f"array {name!r} already exists")
        arr = np.full(self.capacity if length is None else length, fill, dtype=dtype)
        self.arrays[name] = arr
        return arr

    def names(self) -> list[str]:
        return sorted(self.arrays)

    def copy(self) -> World:
        return World.from_arrays({k: v.copy() for k, v in self.arrays.items()})

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> World:
        if "meta" not in arrays:
            raise ValueError("a world needs a 'meta' array")
        meta = np.asarray(arrays["meta"])
        if meta.dtype != np.int64 or meta.shape != (META_LEN,):
            raise ValueError("bad 'meta' array")
        world = cls.__new__(cls)
        world.arrays = {k: np.ascontiguousarray(arrays[k]) for k in sorted(arrays)}
        return world

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **{k: self.arrays[k] for k in self.names()})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> World:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in sorted(npz.files)}
        return cls.from_arrays(arrays)
