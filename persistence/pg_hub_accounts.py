"""Accounts, session families and refresh tokens in PostgreSQL (migration 5), for the hub.

All statements are parameterized; names are unqualified, so the pool's `search_path` picks the schema.
Refresh tokens are stored as sha256 digests; a family is one login and every token it was rotated
into. `rotate` is the only way a refresh token is used: in one transaction it finds the token with a
row lock, refuses an unknown, expired or revoked one, and treats a second use of a rotated token as
theft: the family is revoked (RFC 9700 §4.14.2) and every token of it stops working.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import asyncpg

_ACCOUNT_COLUMNS: Final = (
    "account_id, handle, email, display_name, password_hash, is_guest, role, created_at, muted_until"
)


class Conflict(Exception):  # noqa: N818 - a result, read as "raise Conflict"
    """A unique handle, email or device id is taken."""


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    handle: str | None
    email: str | None
    display_name: str
    password_hash: str | None
    is_guest: bool
    role: str
    created_at: dt.datetime
    muted_until: dt.datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Account:
        return cls(*(row[i] for i in range(9)))


class Rotation(Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"  # theft: the family has just been revoked


@dataclass(frozen=True, slots=True)
class RotateResult:
    outcome: Rotation
    account_id: str = ""
    family_id: str = ""


class AccountStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- accounts ----------------------------------------------------------------------------------
    async def create(
        self,
        account_id: str,
        *,
        handle: str,
        display_name: str,
        email: str | None = None,
        password_hash: str | None = None,
        device_hash: str | None = None,
        is_guest: bool = False,
    ) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO accounts (account_id, handle, email, display_name, password_hash, device_hash, "
                "is_guest) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                account_id, handle, email, display_name, password_hash, device_hash, is_guest,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(exc.constraint_name or "") from None

    async def get(self, account_id: str) -> Account | None:
        row = await self.pool.fetchrow(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1", account_id)
        return None if row is None else Account.from_row(row)

    async def by_login(self, login: str) -> Account | None:
        """By email (contains '@') or handle, case-insensitively; only accounts with a password."""
        column = "email" if "@" in login else "handle"
        row = await self.pool.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE lower({column}) = lower($1) AND password_hash IS NOT NULL",
            login,
        )
        return None if row is None else Account.from_row(row)

    async def by_device(self, device_hash: str) -> Account | None:
        row = await self.pool.fetchrow(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE device_hash = $1", device_hash)
        return None if row is None else Account.from_row(row)

    async def by_handle(self, handle: str) -> Account | None:
        row = await self.pool.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE lower(handle) = lower($1)", handle
        )
        return None if row is None else Account.from_row(row)

    async def names(self, account_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """account id -> (handle, display name) for those that exist."""
        if not account_ids:
            return {}
        rows = await self.pool.fetch(
            "SELECT account_id, coalesce(handle, account_id), display_name FROM accounts "
            "WHERE account_id = ANY($1::text[])",
            list(account_ids),
        )
        return {r[0]: (r[1], r[2] or r[1]) for r in rows}

    async def upgrade(self, account_id: str, *, handle: str, email: str, password_hash: str) -> bool:
        """A guest becomes an email account (same id, so its progress stays); False if not a guest."""
        try:
            status = await self.pool.execute(
                "UPDATE accounts SET handle = $2, email = $3, password_hash = $4, is_guest = false, "
                "device_hash = NULL, updated_at = now() WHERE account_id = $1 AND is_guest",
                account_id, handle, email, password_hash,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(exc.constraint_name or "") from None
        return status.endswith(" 1")

    async def set_password(self, account_id: str, password_hash: str) -> None:
        await self.pool.execute(
            "UPDATE accounts SET password_hash = $2, updated_at = now() WHERE account_id = $1",
            account_id,
            password_hash,
        )

    async def set_display_name(self, account_id: str, display_name: str) -> None:
        await self.pool.execute(
            "UPDATE accounts SET display_name = $2, updated_at = now() WHERE account_id = $1", account_id, display_name
        )

    async def set_role(self, account_id: str, role: str) -> bool:
        status = await self.pool.execute("UPDATE accounts SET role = $2 WHERE account_id = $1", account_id, role)
        return status.endswith(" 1")

    async def set_muted(self, account_id: str, until: dt.datetime | None) -> bool:
        status = await self.pool.execute(
            "UPDATE accounts SET muted_until = $2 WHERE account_id = $1", account_id, until
        )
        return status.endswith(" 1")

    # -- sessions ----------------------------------------------------------------------------------
    async def new_session(
        self, account_id: str, family_id: str, token_hash: bytes, *, family_ttl_s: float, token_ttl_s: float,
        user_agent: str, ip: str,
    ) -> None:  # fmt: skip
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO session_families (family_id, account_id, expires_at, user_agent, ip) "
                "VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5)",
                family_id, account_id, family_ttl_s, user_agent, ip,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) "
                "VALUES ($1, $2, now() + make_interval(secs => $3))",
                token_hash, family_id, token_ttl_s,
            )  # fmt: skip

    async def rotate(self, token_hash: bytes, new_hash: bytes, token_ttl_s: float) -> RotateResult:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT t.family_id, t.used_at IS NOT NULL, t.expires_at <= now(), f.account_id, "
                "f.revoked_at IS NOT NULL, f.expires_at <= now() FROM refresh_tokens t "
                "JOIN session_families f USING (family_id) WHERE t.token_hash = $1 FOR UPDATE OF t, f",
                token_hash,
            )
            if row is None:
                return RotateResult(Rotation.UNKNOWN)
            family, used, expired, account, revoked, family_expired = row
            if revoked:
                return RotateResult(Rotation.REVOKED, account, family)
            if used:
                await conn.execute(
                    "UPDATE session_families SET revoked_at = now(), revoke_reason = 'refresh token reused' "
                    "WHERE family_id = $1 AND revoked_at IS NULL",
                    family,
                )
                return RotateResult(Rotation.REUSED, account, family)
            if expired or family_expired:
                return RotateResult(Rotation.EXPIRED, account, family)
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash)
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) "
                "SELECT $1, $2, least(f.expires_at, now() + make_interval(secs => $3)) "
                "FROM session_families f WHERE f.family_id = $2",
                new_hash, family, token_ttl_s,
            )  # fmt: skip
            await conn.execute("UPDATE session_families SET last_used_at = now() WHERE family_id = $1", family)
            return RotateResult(Rotation.OK, account, family)

    async def revoke_family(self, family_id: str, reason: str, account_id: str | None = None) -> bool:
        status = await self.pool.execute(
            "UPDATE session_families SET revoked_at = now(), revoke_reason = $2 WHERE family_id = $1 "
            "AND revoked_at IS NULL AND ($3::text IS NULL OR account_id = $3)",
            family_id, reason, account_id,
        )  # fmt: skip
        return not status.endswith(" 0")

    async def revoke_account(self, account_id: str, reason: str, keep: str | None = None) -> list[str]:
        """Revoke every live family of the account but `keep`; their ids."""
        rows = await self.pool.fetch(
            "UPDATE session_families SET revoked_at = now(), revoke_reason = $2 WHERE account_id = $1 "
            "AND revoked_at IS NULL AND ($3::text IS NULL OR family_id <> $3) RETURNING family_id",
            account_id, reason, keep,
        )  # fmt: skip
        return [r[0] for r in rows]

    async def revoked_since(self, since: dt.datetime) -> list[tuple[str, dt.datetime]]:
        rows = await self.pool.fetch(
            "SELECT family_id, revoked_at FROM session_families WHERE revoked_at > $1 ORDER BY revoked_at", since
        )
        return [(r[0], r[1]) for r in rows]

    async def sessions(self, account_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT family_id, created_at, last_used_at, expires_at, user_agent FROM session_families "
            "WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at",
            account_id,
        )
        return [dict(r) for r in rows]

    async def now(self) -> dt.datetime:
        value = await self.pool.fetchval("SELECT now()")
        assert isinstance(value, dt.datetime)
        return value
