"""Violation events: what the validators flag, as preallocated arrays; `violate` is the kernel writer.

A violation is evidence, not a verdict: (kind, player id, measured value, limit). The input that
caused it is refused by the same kernel (neutralized); what to do about the player is the engine's
policy (engine/security/fairplay/). The numbering is shared by every game so that one policy table fits all;
kinds 1-31 come out of the sim, 32 and up are the engine's own (protocol abuse, tokens).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Int, Num

# -- raised by sim kernels (deterministic: replaying the journal raises them again) --------------
V_THRUST: Final = 1  # thrust magnitude beyond 1 (value = |(dx, dy)|, limit = 1)
V_TIME: Final = 2  # speed hack: client time runs ahead of server time (ticks ahead, margin)
V_INPUT_RATE: Final = 3  # more inputs than one per tick plus the burst credit (credit, 0)
V_HARVEST_RANGE: Final = 4  # harvest asked far from any planet (distance, range + slack)
V_HARVEST_RATE: Final = 5  # harvest requests faster than the bound (requests, bucket size)
V_UNAFFORDABLE: Final = 6  # build or transfer beyond the balance (cost, balance)
V_TXN_REPLAY: Final = 7  # transfer id reused, or an identical retry repeated (txn id, last txn id)
V_FORGED_CLAIM: Final = 8  # claim of an achievement not earned (achievement id, held bitmask)
V_BAD_ACTION: Final = 9  # an action the game does not have or with illegal arguments (action, 0)
V_SPEED: Final = 10  # state check: a ship faster than the game allows (speed, max speed)
V_LEDGER: Final = 11  # state check: resources created or destroyed outside the rules (delta, 0)
V_NEGATIVE: Final = 12  # state check: a negative balance (balance, 0)

SIM_KINDS: Final = {
    V_THRUST: "thrust_range",
    V_TIME: "time_discrepancy",
    V_INPUT_RATE: "input_rate",
    V_HARVEST_RANGE: "harvest_range",
    V_HARVEST_RATE: "harvest_rate",
    V_UNAFFORDABLE: "unaffordable",
    V_TXN_REPLAY: "transfer_replay",
    V_FORGED_CLAIM: "forged_claim",
    V_BAD_ACTION: "bad_action",
    V_SPEED: "speed",
    V_LEDGER: "ledger",
    V_NEGATIVE: "negative_balance",
}

_N: Final = 0
_OVERFLOW: Final = 1


@njit(cache=True)
def violate(
    v_kind: np.ndarray,
    v_eid: np.ndarray,
    v_value: np.ndarray,
    v_limit: np.ndarray,
    v_counts: np.ndarray,
    kind: Int,
    eid: Int,
    value: Num,
    limit: Num,
) -> None:
    """Append one violation, or count it in v_counts[1] when the buffer is full."""
    n = v_counts[0]
    if n < v_kind.shape[0]:
        v_kind[n] = kind
        v_eid[n] = eid
        v_value[n] = value
        v_limit[n] = limit
        v_counts[0] = n + 1
    else:
        v_counts[1] += 1


class ViolationBuffer:
    """Preallocated violation arrays of one tick; `n` rows are valid."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.kind = np.zeros(capacity, dtype=np.int32)
        self.eid = np.zeros(capacity, dtype=np.uint32)
        self.value = np.zeros(capacity, dtype=np.float64)
        self.limit = np.zeros(capacity, dtype=np.float64)
        self.counts = np.zeros(2, dtype=np.int64)  # [n, overflow]

    @property
    def n(self) -> int:
        return int(self.counts[_N])

    @property
    def overflow(self) -> int:
        return int(self.counts[_OVERFLOW])

    def clear(self) -> None:
        self.counts[:] = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(kind, eid, value, limit, counts): the argument tuple kernels take."""
        return self.kind, self.eid, self.value, self.limit, self.counts

    def rows(self) -> list[tuple[int, int, float, float]]:
        """(kind, eid, value, limit) per violation (off the hot path: tools, tests, policy)."""
        n = self.n
        return list(
            zip(
                self.kind[:n].tolist(),
                self.eid[:n].tolist(),
                self.value[:n].tolist(),
                self.limit[:n].tolist(),
                strict=True,
            )
        )
