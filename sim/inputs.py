"""The input batch of one tick: preallocated arrays, filled by the engine, read by kernels."""

from __future__ import annotations

import numpy as np


class InputBatch:
    """Inputs in batch order; `n` rows are used. The sim writes `accepted[i]` (0/1)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.eid = np.zeros(capacity, dtype=np.uint32)
        self.seq = np.zeros(capacity, dtype=np.uint32)
        self.client_tick = np.zeros(capacity, dtype=np.uint32)
        self.dx = np.zeros(capacity, dtype=np.float32)
        self.dy = np.zeros(capacity, dtype=np.float32)
        self.action = np.zeros(capacity, dtype=np.int32)
        self.arg = np.zeros(capacity, dtype=np.int32)
        # Game-defined extra arguments (startales' transfer: resource, amount) and the client's
        # transaction id of an action that must apply at most once (0: none).
        self.arg2 = np.zeros(capacity, dtype=np.int32)
        self.arg3 = np.zeros(capacity, dtype=np.int32)
        self.txn = np.zeros(capacity, dtype=np.uint32)
        self.accepted = np.zeros(capacity, dtype=np.uint8)
        self.n = 0

    def clear(self) -> None:
        n = self.n
        self.accepted[:n] = 0
        self.arg2[:n] = 0
        self.arg3[:n] = 0
        self.txn[:n] = 0
        self.n = 0

    def add(
        self,
        eid: int,
        seq: int,
        client_tick: int,
        dx: float,
        dy: float,
        action: int = 0,
        arg: int = 0,
        arg2: int = 0,
        arg3: int = 0,
        txn: int = 0,
    ) -> bool:
        """Append one input; False (nothing written) when the batch is full."""
        i = self.n
        if i >= self.capacity:
            return False
        self.eid[i] = eid
        self.seq[i] = seq
        self.client_tick[i] = client_tick
        self.dx[i] = dx
        self.dy[i] = dy
        self.action[i] = action
        self.arg[i] = arg
        if arg2 or arg3 or txn:  # rare (transfers); clear() zeroes them for everyone else
            self.arg2[i] = arg2
            self.arg3[i] = arg3
            self.txn[i] = txn
        self.accepted[i] = 0
        self.n = i + 1
        return True
