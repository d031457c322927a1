"""The input batch of one tick: preallocated columns derived from a game's inputs, filled by the
engine, read by kernels as `inp` (a named tuple of the columns, `accepted` and `n`).

Columns, in order (also the journal's record layout, `input_dtype`):

    eid u4, seq u4, client_tick u4     the engine's: who, which input, the client's clock
    <the game's inputs, in spec order>
    bound u2                           the engine's: the rewind (ticks) this input's connection may
                                       claim for lag compensation; 0 = not measured (sim/history.py)

Kernels also read `slot` (the player's slot when the shared rules admitted the input, else -1)
and `accepted` (sim/validate.py), which the engine computes each tick and the journal does not keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from sim.spec import Input
from sim.tuples import tuple_class

HEAD: Final = (("eid", "<u4"), ("seq", "<u4"), ("client_tick", "<u4"))
TAIL: Final = (("bound", "<u2"),)
RESERVED: Final = frozenset(n for n, _ in HEAD + TAIL) | {"accepted", "slot", "n", "now"}
_WIRE: Final = {"f32": "<f4", "i32": "<i4", "u32": "<u4"}


def input_dtype(inputs: Sequence[Input]) -> np.dtype:
    """The packed little-endian record of one input: what the journal stores per input."""
    for i in inputs:
        if i.name in RESERVED:
            raise ValueError(f"input name {i.name!r} is the engine's")
    return np.dtype([*HEAD, *((i.name, _WIRE[i.type]) for i in inputs), *TAIL])


class InputBatch:
    """Inputs in batch order; `n` rows are used. The sim writes `accepted[i]` (0/1)."""

    def __init__(self, capacity: int, inputs: Sequence[Input] = ()) -> None:
        self.capacity = int(capacity)
        self.inputs = tuple(inputs)
        self.dtype = input_dtype(self.inputs)
        self.names: tuple[str, ...] = self.dtype.names or ()
        self.columns: dict[str, np.ndarray] = {}
        for name in self.names:
            self.columns[name] = np.zeros(self.capacity, dtype=self.dtype[name].newbyteorder("="))
        self.eid = self.columns["eid"]
        self.seq = self.columns["seq"]
        self.client_tick = self.columns["client_tick"]
        self.bound = self.columns["bound"]
        self.accepted = np.zeros(self.capacity, dtype=np.uint8)
        self.slot = np.zeros(self.capacity, dtype=np.int64)
        self._game = tuple(self.columns[i.name] for i in self.inputs)
        self._zeroed = (*self._game, self.bound, self.accepted)
        self._view: Any = tuple_class([*self.names, "slot", "accepted", "n", "now"])
        self.n = 0

    def __getattr__(self, name: str) -> np.ndarray:
        columns = self.__dict__.get("columns")
        if columns is not None and name in columns:
            return columns[name]
        raise AttributeError(name)

    def clear(self) -> None:
        n = self.n
        for col in self._zeroed:
            col[:n] = 0
        self.n = 0

    def add(self, eid: int, seq: int, client_tick: int, *values: float | int, bound: int = 0) -> bool:
        """Append one input (game values in spec order; missing ones stay 0); False when full."""
        return self.add_values(eid, seq, client_tick, values, bound)

    def add_values(
        self, eid: int, seq: int, client_tick: int, values: tuple[float | int, ...], bound: int = 0
    ) -> bool:
        """`add` with the values as one tuple (the server's path: what the session decoded)."""
        i = self.n
        if i >= self.capacity:
            return False
        self.eid[i] = eid
        self.seq[i] = seq
        self.client_tick[i] = client_tick
        game = self._game
        for k, v in enumerate(values):
            if k < len(game):
                game[k][i] = v
        if bound:
            self.bound[i] = bound
        self.n = i + 1
        return True

    def view(self, now: int) -> Any:
        """The named tuple kernels take as `inp`: the columns, `slot`, `accepted`, `n`, the tick `now`."""
        return self._view(*self.columns.values(), self.slot, self.accepted, np.int64(self.n), np.int64(now))

    def records(self) -> np.ndarray:
        """The used rows as `input_dtype` records (the journal's layout)."""
        n = self.n
        out = np.empty(n, dtype=self.dtype)
        for name, col in self.columns.items():
            out[name] = col[:n]
        return out

    def fill(self, records: np.ndarray) -> None:
        """Replace the batch by journal records (any subset of the columns; absent ones are 0)."""
        self.clear()
        n = len(records)
        if n > self.capacity:
            raise ValueError(f"{n} inputs exceed the batch capacity {self.capacity}")
        for name in records.dtype.names or ():
            self.columns[name][:n] = records[name]
        self.n = n

