"""What the PostgreSQL write-behind buffers: row kinds, the row records the engine hands over, the
overflow sink protocol, and the conversions between them (plain values, so a row can be serialized
as it is by an overflow sink)."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, NamedTuple, Protocol

TXN: Final = "txn"
PROGRESS: Final = "progress"
ACCOUNT: Final = "account"
AUDIT: Final = "audit"

_U64: Final = 1 << 64
_I64_MAX: Final = (1 << 63) - 1


class PendingRow(NamedTuple):
    """One buffered row: `table` is TXN, PROGRESS, ACCOUNT or AUDIT; `values` are plain Python values
    (str, int, float, None), so an overflow sink can serialize the row (JSON, msgpack) as it is.

    - TXN:      (txn_id, account_id, campaign_id, tick, kind, resource, amount, balance_after, created_at)
    - PROGRESS: (account_id, campaign_id, tick, resources_json, buildings, achievements_i64, last_x,
                 last_y, updated_at, txn_last) — 9 values in rows written before txn_last existed
    - ACCOUNT:  (account_id, display_name)
    - AUDIT:    (event_id, ts, campaign_id, account_id, action, evidence_json)

    Times are Unix epoch seconds (float), taken at enqueue time.
    """

    table: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class LedgerTxn:
    """One ledger entry. `txn_id` must be deterministic (e.g. f"{campaign}:{tick}:{eid}:{n}") so that
    a replayed journal re-emits the same ids and PostgreSQL keeps one row each."""

    txn_id: str
    account_id: str
    campaign_id: str
    tick: int
    kind: str  # harvest, build, transfer_in, transfer_out, ...
    resource: int
    amount: int  # signed change
    balance_after: int  # must be >= 0 (CHECK in the table)
    created_at: float | None = None  # epoch seconds; None = now


@dataclass(frozen=True, slots=True)
class Progress:
    account_id: str
    campaign_id: str
    tick: int
    resources: Mapping[str | int, int]
    buildings: int = 0
    achievements: int = 0  # bitmask, 0 <= value < 2**64
    last_x: float | None = None
    last_y: float | None = None
    updated_at: float | None = None  # epoch seconds; None = now
    txn_last: int = 0  # the last transfer (transaction) id the player applied
    last_vx: float | None = None  # velocity when saved: a returning ship moves on as it did (v30)
    last_vy: float | None = None


class OverflowSink(Protocol):
    """Where rows go when the buffer is full (the engine plugs in the campaign SQLite).

    `spill` is called from the tick and must not block (enqueue to a writer thread, append to a list).
    `unspill` is awaited by the writer task when the buffer has room; it returns up to `limit` rows and
    removes them from the sink (the writer owns them from then on). `pending` is the number of rows
    held. `drain` removes and returns everything (shutdown, tests).
    """

    def spill(self, rows: Sequence[PendingRow]) -> None: ...

    async def unspill(self, limit: int) -> list[PendingRow]: ...

    def pending(self) -> int: ...

    def drain(self) -> list[PendingRow]: ...


class MemoryOverflow:
    """Default overflow sink: an unbounded in-process list. Survives outages, not process crashes."""

    def __init__(self) -> None:
        self._rows: deque[PendingRow] = deque()

    def spill(self, rows: Sequence[PendingRow]) -> None:
        self._rows.extend(rows)

    async def unspill(self, limit: int) -> list[PendingRow]:
        n = min(limit, len(self._rows))
        return [self._rows.popleft() for _ in range(n)]

    def pending(self) -> int:
        return len(self._rows)

    def drain(self) -> list[PendingRow]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


class PgUnavailableError(RuntimeError):
    """PostgreSQL could not be reached for a read (and nothing buffered could answer it)."""


def to_i64(mask: int) -> int:
    """A uint64 bitmask as the int64 a BIGINT holds (the same bits)."""
    value = int(mask) % _U64
    return value - _U64 if value > _I64_MAX else value


def _json_default(obj: object) -> object:
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(obj)


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def progress_values(p: Progress) -> tuple[Any, ...]:
    """A PROGRESS row's values (raises TypeError/ValueError/OverflowError for bad data)."""
    return (
        p.account_id,
        p.campaign_id,
        int(p.tick),
        dumps({str(k): int(v) for k, v in p.resources.items()}),
        int(p.buildings),
        to_i64(p.achievements),
        None if p.last_x is None else float(p.last_x),
        None if p.last_y is None else float(p.last_y),
        time.time() if p.updated_at is None else float(p.updated_at),
        int(p.txn_last),
        None if p.last_vx is None else float(p.last_vx),
        None if p.last_vy is None else float(p.last_vy),
    )


def progress_dict(values: Sequence[Any]) -> dict[str, Any]:
    """The progress dict `load_progress` returns, from a PROGRESS row's values (or a database row in
    the same order)."""
    account_id, campaign_id, tick, resources, buildings, achievements, last_x, last_y, ts = values[:9]
    return {
        "txn_last": values[9] if len(values) > 9 else 0,
        "account_id": account_id,
        "campaign_id": campaign_id,
        "tick": tick,
        "resources": {k: int(v) for k, v in json.loads(resources).items()},
        "buildings": buildings,
        "achievements": achievements % _U64,
        "last_x": last_x,
        "last_y": last_y,
        "last_vx": values[10] if len(values) > 10 else None,
        "last_vy": values[11] if len(values) > 11 else None,
        "updated_at": ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts).astimezone(),
    }
