"""Violation events: what the validators flag, as preallocated arrays; `violate` is the kernel writer.

A violation is evidence, not a verdict: (kind, player id, measured value, limit). The input that
caused it is refused by the same kernel (neutralized); what to do about the player is the engine's
policy (engine/security/fairplay/). The numbering is shared by every game so that one policy table fits all;
kinds 1-31 come out of the sim, 32 and up are the engine's own (protocol abuse, tokens).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from sim.rows import RowBuffer, append

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
V_ACTION_RATE: Final = 13  # an action asked for faster than the game allows (requests, allowed)
V_IMPOSSIBLE_HIT: Final = 14  # a lag-compensated hit the history refutes (distance, reach + slack)

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
    V_ACTION_RATE: "action_rate",
    V_IMPOSSIBLE_HIT: "impossible_hit",
}

# The one row writer, under the name validators read best: violate(vio, kind, eid, value, limit).
violate = append


class ViolationBuffer(RowBuffer):
    """Preallocated violation rows of one tick."""

    columns = (("kind", np.int32), ("eid", np.uint32), ("value", np.float64), ("limit", np.float64))
    kind: np.ndarray
    eid: np.ndarray
    value: np.ndarray
    limit: np.ndarray
