"""Fair-play records and the store interface: bans, audit entries, their validation and JSON.

Two record types:

- `BanRecord`: who may not play (an account, an IP range, or both), where (one campaign or all), until
  when (None = permanent). Lifting a ban keeps its row (`lifted_at`, `lifted_by`): the history is part
  of the evidence of an appeal.
- `AuditEntry`: one decision (warn, kick, ban, unban, admin_kick, ...) with its evidence, a JSON object
  (the engine puts the violation rows and `{"from_tick": a, "to_tick": b}`, the journal range that
  reproduces them, in it).

`FairplayStore` is the interface the engine programs against; `SqliteFairplayStore`
(`persistence/fairplay_store.py`) and `PgFairplayStore` (`persistence/pg_fairplay.py`) implement it,
with the validation here so that both refuse exactly the same input.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE: Final = 10_000

# Nested evidence deeper than this is cut, so a self-referencing structure cannot recurse forever.
_MAX_EVIDENCE_DEPTH: Final = 32


# One serialized audit row, ready for either database: (event_id, ts, campaign, account, action,
# evidence_json). Plain values, so it can be handed between threads and logged as it is.
AuditRow = tuple[str, float, str | None, str | None, str, str]


# ---------------------------------------------------------------------------------------- records


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class BanRecord:
    """One ban. Times are Unix epoch seconds. A ban targets an account, an IP range (CIDR text in
    canonical form, e.g. "10.0.0.0/8", a single address as "/32" or "/128"), or both; it applies when
    either target matches. `campaign` None = every campaign that consults this store."""

    ban_id: int
    account: str | None
    ip_range: str | None
    campaign: str | None
    reason: str
    created_by: str
    created_at: float
    until: float | None = None
    lifted_at: float | None = None
    lifted_by: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> BanRecord:
        """From a database row in field order (times as epoch seconds): both stores select that."""
        ban_id, account, ip_range, campaign, reason, created_by, created_at, until, lifted_at, lifted_by = row
        return cls(
            int(ban_id), account, ip_range, campaign, reason, created_by, float(created_at),
            None if until is None else float(until), None if lifted_at is None else float(lifted_at), lifted_by,
        )  # fmt: skip

    def active(self, now: float) -> bool:
        """In force at `now`: not expired and not lifted (as of `now`, so history can be asked too)."""
        if self.lifted_at is not None and self.lifted_at <= now:
            return False
        return self.until is None or now < self.until

    def applies_to(self, *, account: str | None, ip: str | None, campaign: str | None, now: float) -> bool:
        """Whether this ban refuses a hello from `account` at address `ip` to `campaign` at `now`.
        An unparsable `ip` matches no range (the account part still applies)."""
        if not self.active(now):
            return False
        if self.campaign is not None and self.campaign != campaign:
            return False
        if self.account is not None and account is not None and self.account == account:
            return True
        if self.ip_range is None or not ip:
            return False
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; IPv4 ranges must still catch them.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        network = ipaddress.ip_network(self.ip_range, strict=False)
        return address.version == network.version and address in network

    def to_json(self) -> dict[str, Any]:
        return {
            "ban_id": self.ban_id,
            "account": self.account,
            "ip_range": self.ip_range,
            "campaign": self.campaign,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "until": self.until,
            "lifted_at": self.lifted_at,
            "lifted_by": self.lifted_by,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One fair-play decision. Give a deterministic `event_id` when the same decision may be emitted
    again (journal replay): both stores keep the first row per event_id. `ts` is Unix epoch seconds."""

    action: str
    ts: float = field(default_factory=time.time)
    campaign: str | None = None
    account: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=_new_event_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "ts": self.ts,
            "campaign": self.campaign,
            "account": self.account,
            "action": self.action,
            "evidence": dict(self.evidence),
        }


# ---------------------------------------------------------------------------------------- validation


def normalize_ip_range(text: str) -> str:
    """Canonical CIDR text of `text` ("10.0.0.0/8", "192.0.2.7" -> "192.0.2.7/32", IPv6 likewise).

    Raises ValueError for anything else, including a range with host bits set ("10.0.0.1/8"): that is
    a typo more often than not, and banning the wrong network is worse than refusing the command."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"invalid IP range {text!r}")
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"invalid IP range {text!r}: {exc}") from None


def _optional_name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string or None, not {value!r}")
    return value


def _required_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return value


def finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class NewBan:
    """The validated fields of a ban about to be inserted (shared by both stores)."""

    account: str | None
    ip_range: str | None
    campaign: str | None
    reason: str
    created_by: str
    created_at: float
    until: float | None

    def record(self, ban_id: int) -> BanRecord:
        return BanRecord(
            ban_id,
            self.account,
            self.ip_range,
            self.campaign,
            self.reason,
            self.created_by,
            self.created_at,
            self.until,
        )


def validate_ban(
    *,
    account: str | None,
    ip_range: str | None,
    campaign: str | None,
    reason: str,
    created_by: str,
    until: float | None,
    created_at: float | None,
) -> NewBan:
    """Check and normalize `add_ban`'s arguments; ValueError says what is wrong."""
    account = _optional_name(account, "account")
    ip = None if ip_range is None else normalize_ip_range(ip_range)
    if account is None and ip is None:
        raise ValueError("a ban needs an account, an IP range, or both")
    created = time.time() if created_at is None else finite(created_at, "created_at")
    end = None if until is None else finite(until, "until")
    if end is not None and end <= created:
        raise ValueError(f"until ({end}) must be after created_at ({created})")
    return NewBan(
        account,
        ip,
        _optional_name(campaign, "campaign"),
        _required_name(reason, "reason"),
        _required_name(created_by, "created_by"),
        created,
        end,
    )


def validate_lift(
    account: str | None, ip_range: str | None, ban_id: int | None, by: str, now: float | None
) -> tuple[str | None, str | None, int | None, str, float]:
    """Check `remove_bans`' arguments: at least one selector, a non-empty `by`."""
    account = _optional_name(account, "account")
    ip = None if ip_range is None else normalize_ip_range(ip_range)
    if ban_id is not None and (isinstance(ban_id, bool) or not isinstance(ban_id, int)):
        raise ValueError(f"ban_id must be an int, not {ban_id!r}")
    if account is None and ip is None and ban_id is None:
        raise ValueError("say which bans to lift: account, ip_range and/or ban_id")
    return account, ip, ban_id, _required_name(by, "by"), time.time() if now is None else finite(now, "now")


def _json_default(obj: object) -> object:
    # numpy scalars and arrays (violation rows come straight from the sim's event arrays).
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(obj)


def sanitize_json(value: object, *, strip_nul: bool = False, _depth: int = 0) -> object:
    """A JSON-safe copy: non-finite floats become "NaN"/"Infinity"/"-Infinity" (PostgreSQL's JSONB and
    strict JSON readers refuse them, and a NaN input is exactly what a cheat may send); with
    `strip_nul`, NUL characters become U+FFFD (JSONB refuses \\u0000, and a player-chosen string must
    not be able to make its own evidence unstorable)."""
    if _depth > _MAX_EVIDENCE_DEPTH:
        return "<too deep>"
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if strip_nul else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            text = str(key).replace("\x00", "\ufffd") if strip_nul else str(key)
            out[text] = sanitize_json(item, strip_nul=strip_nul, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [sanitize_json(v, strip_nul=strip_nul, _depth=_depth + 1) for v in value]
    if value is None or isinstance(value, (int, bool)):
        return value
    converted = _json_default(value)
    return sanitize_json(converted, strip_nul=strip_nul, _depth=_depth + 1)


def evidence_json(evidence: Mapping[str, Any]) -> str:
    """Serialize evidence to strict JSON text. Taken at enqueue time, so later changes to the caller's
    dict do not reach the log. The fast path is one C-level dumps; the slow path only runs for NaN,
    infinities or a cycle."""
    if not isinstance(evidence, Mapping):
        raise TypeError(f"evidence must be a mapping, not {type(evidence).__name__}")
    try:
        return json.dumps(evidence, separators=(",", ":"), default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(sanitize_json(evidence), separators=(",", ":"), default=_json_default, allow_nan=False)


def audit_row(entry: AuditEntry) -> AuditRow:
    """Validate and serialize an entry for either store. Raises TypeError/ValueError when it is unusable."""
    if not isinstance(entry, AuditEntry):
        raise TypeError(f"expected an AuditEntry, not {type(entry).__name__}")
    return (
        _required_name(entry.event_id, "event_id"),
        finite(entry.ts, "ts"),
        _optional_name(entry.campaign, "campaign"),
        _optional_name(entry.account, "account"),
        _required_name(entry.action, "action"),
        evidence_json(entry.evidence),
    )


def entry_from_row(row: Sequence[Any]) -> AuditEntry:
    event_id, ts, campaign, account, action, evidence = row
    return AuditEntry(
        event_id=event_id,
        ts=float(ts),
        campaign=campaign,
        account=account,
        action=action,
        evidence=json.loads(evidence) if evidence else {},
    )


# ---------------------------------------------------------------------------------------- interface


@runtime_checkable
class FairplayStore(Protocol):
    """What the engine needs from a ban/audit store.

    `append_audit` is the only method for the tick: it never blocks and never raises (an unusable or
    unqueueable entry is counted and logged, see `stats()`). The async methods do their I/O off the
    event loop. `stats()` has at least `queued`, `written`, `audit_dropped`, `write_errors`, `pending`.
    """

    def append_audit(self, entry: AuditEntry) -> None: ...

    async def flush(self, timeout: float | None = None) -> bool: ...

    async def add_ban(
        self,
        *,
        account: str | None = None,
        ip_range: str | None = None,
        campaign: str | None = None,
        reason: str,
        created_by: str,
        until: float | None = None,
        created_at: float | None = None,
    ) -> BanRecord: ...

    async def remove_bans(
        self,
        *,
        account: str | None = None,
        ip_range: str | None = None,
        ban_id: int | None = None,
        by: str,
        now: float | None = None,
    ) -> int: ...

    async def list_bans(self, now: float, include_expired: bool = False) -> list[BanRecord]: ...

    async def load_active_bans(self, now: float) -> list[BanRecord]: ...

    async def read_audit(
        self,
        limit: int = 100,
        account: str | None = None,
        since_ts: float | None = None,
        campaign: str | None = None,
    ) -> list[AuditEntry]: ...

    def stats(self) -> dict[str, object]: ...

    async def close(self, timeout: float = 5.0) -> None: ...


class StoreClosedError(RuntimeError):
    """The store was closed."""
