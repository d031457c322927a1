"""Startales' numbers: limits, costs, action ids, event kinds and refusal reasons."""

from __future__ import annotations

from typing import Final

KIND_PLANET: Final = 0  # the replicated `kind` of an entity
KIND_DRONE: Final = 1
KIND_SHIP: Final = 2

MAX_PLANETS: Final = 64  # the visited bitmask is a uint64
MAX_ACCEL: Final = 200.0  # u/s²
MAX_SPEED: Final = 300.0  # u/s
DRONE_SPEED: Final = 40.0  # u/s
P_TURN: Final = 1.0 / 120.0  # drone turn probability per tick
PLANET_MARGIN: Final = 100.0  # planets are generated at least this far inside the bounds
DEPOSIT_MIN: Final = 5_000
DEPOSIT_MAX: Final = 20_000
HARVEST_RANGE: Final = 60.0
HARVEST_PER_TICK: Final = 5
VISIT_RADIUS: Final = 80.0
BUILD_COST_METAL: Final = 100
BUILD_COST_CRYSTAL: Final = 50

RES_METAL: Final = 0
RES_CRYSTAL: Final = 1

ACTION_NONE: Final = 0
ACTION_HARVEST: Final = 1  # arg: planet index + 1, or 0 for the nearest one in range
ACTION_BUILD: Final = 2
ACTION_STOP: Final = 3
ACTION_SCAN: Final = 4  # arg: target drone id (see scan_arg)
ACTION_GIFT: Final = 5  # arg: recipient id, arg2: resource, arg3: amount, txn: transaction id
ACTION_CLAIM: Final = 6  # arg: achievement id the client claims it has earned

SCAN_RANGE: Final = 150.0  # u, ship (now) to target drone (at the client's displayed tick)
MAX_REWIND_SECONDS: Final = 0.4  # lag-compensation bound: 24 ticks at 60 Hz

# Fair-play tolerances (docs/fairplay.md). A latency-bound client asks for a harvest where its
# display put it; by then the ship may have moved up to MAX_SPEED × ~0.6 s.
HARVEST_SLACK: Final = 200.0  # u beyond HARVEST_RANGE before a refused harvest is a violation
HARVEST_REQ_PERIOD_S: Final = 0.25  # harvest requests: one per 0.25 s on average...
HARVEST_REQ_BURST: Final = 8  # ...with a burst of 8
MAX_GIFT: Final = 1_000_000  # largest single transfer
TXN_RETRIES: Final = 3  # identical retries of the last transfer answered before it is a violation

# Event kinds and refusal reasons of startales' own rules (sim/events.py numbering continued).
EV_BUILT: Final = 4  # a = building count
EV_SCANNED: Final = 5  # a = target id, b = rewind (ticks)
EV_TRANSFER: Final = 6  # to the sender: a = transaction id, b = TXN_APPLIED or TXN_DUPLICATE
EV_RECEIVED: Final = 7  # to the recipient: a = sender id, b = amount * 2 + resource
TXN_APPLIED: Final = 0
TXN_DUPLICATE: Final = 1  # an identical retry of an applied transfer: nothing moved again
REF_DUPLICATE: Final = 11  # transfer id already used (or retried too often)
REF_NOT_EARNED: Final = 12  # achievement claim not backed by state

# achievement ids (EV_ACHIEVEMENT.a); bit (1 << id) of `achievements`
ACH_FIRST_HARVEST: Final = 0  # any resource ever harvested
ACH_EXPLORER: Final = 1  # visited >= ACH_VISITS planets
ACH_BUILDER: Final = 2  # >= ACH_BUILDINGS buildings
ACH_VOYAGER: Final = 3  # distance travelled >= ACH_DISTANCE
ACH_COUNT: Final = 4
ACH_VISITS: Final = 5
ACH_BUILDINGS: Final = 3
ACH_DISTANCE: Final = 5000.0

# world["ledger"]: the resource books, checked every tick (conservation)
LEDGER_GENESIS: Final = 0  # deposits at creation
LEDGER_IMPORTED: Final = 1  # balances restored from durable progress at joins
LEDGER_EXPORTED: Final = 2  # balances that left the world with their ship
LEDGER_BURNED: Final = 3  # spent on buildings
LEDGER_LEN: Final = 4


def scan_arg(target: int) -> int:
    """The input ``arg`` (int32) carrying a uint32 entity id (its bits, two's complement)."""
    t = int(target) & 0xFFFFFFFF
    return t - (1 << 32) if t >= 1 << 31 else t
