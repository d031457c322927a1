"""Violation kinds: the sim's (sim/violations.py, 1-31) and the engine's own (32 and up)."""

from __future__ import annotations

from typing import Final

from sim.violations import (
    SIM_KINDS,
    V_ACTION_RATE,
    V_BAD_ACTION,
    V_FORGED_CLAIM,
    V_HARVEST_RANGE,
    V_HARVEST_RATE,
    V_IMPOSSIBLE_HIT,
    V_INPUT_RATE,
    V_LEDGER,
    V_NEGATIVE,
    V_SPEED,
    V_THRUST,
    V_TIME,
    V_TXN_REPLAY,
    V_UNAFFORDABLE,
)

# -- raised by the engine from the sessions and the transport (not replayable: not in the journal)
V_MALFORMED: Final = 32  # not msgpack, unknown type, bad field, input before welcome...
V_OVERSIZED: Final = 33  # a frame beyond the size limit
V_FLOOD: Final = 34  # messages beyond the per-connection token bucket
V_HANDSHAKE: Final = 35  # no hello within the handshake time-out (per IP)
V_CONN_FLOOD: Final = 36  # new connections from one IP beyond its rate (per IP)
V_BAD_TOKEN: Final = 37  # forged, expired, other-campaign or malformed join token (per IP)
V_TOKEN_REPLAY: Final = 38  # a join token presented twice (per IP)
V_ROBOTIC_TIMING: Final = 48  # statistical signal: input timing with near-zero variance (signals.py)

KIND_NAMES: Final[dict[int, str]] = {
    **SIM_KINDS,
    V_MALFORMED: "malformed_frame",
    V_OVERSIZED: "oversized_frame",
    V_FLOOD: "message_flood",
    V_HANDSHAKE: "handshake_timeout",
    V_CONN_FLOOD: "connection_flood",
    V_BAD_TOKEN: "bad_token",
    V_TOKEN_REPLAY: "token_replay",
    V_ROBOTIC_TIMING: "robotic_timing",
}

# Suspicion points per violation (docs/fairplay.md). Chosen so that what lag, loss and bursts of
# delay can produce by accident (a rare thrust rounding, an occasional refused harvest) decays away
# below the warning, while a cheat that keeps cheating reaches a kick within seconds. State checks
# (speed, ledger, negative) weigh 0: they flag bugs in the rules, not players; they are audited.
DEFAULT_WEIGHTS: Final[dict[int, float]] = {
    V_THRUST: 0.25,  # wander's peer scenario sends 1 % (1, 1) inputs by design: stays far below a warning
    V_TIME: 2.0,
    V_INPUT_RATE: 1.0,
    V_HARVEST_RANGE: 4.0,
    V_HARVEST_RATE: 2.0,
    V_UNAFFORDABLE: 3.0,
    V_TXN_REPLAY: 10.0,
    V_FORGED_CLAIM: 20.0,
    V_BAD_ACTION: 5.0,
    V_ACTION_RATE: 2.0,
    V_IMPOSSIBLE_HIT: 4.0,
    V_SPEED: 0.0,
    V_LEDGER: 0.0,
    V_NEGATIVE: 0.0,
    V_MALFORMED: 4.0,
    V_OVERSIZED: 10.0,
    V_FLOOD: 10.0,
    V_HANDSHAKE: 4.0,
    V_CONN_FLOOD: 10.0,
    V_BAD_TOKEN: 6.0,
    V_TOKEN_REPLAY: 10.0,
    V_ROBOTIC_TIMING: 5.0,
}

STATE_KINDS: Final = frozenset({V_SPEED, V_LEDGER, V_NEGATIVE})


def kind_name(kind: int) -> str:
    return KIND_NAMES.get(kind, f"kind_{kind}")
