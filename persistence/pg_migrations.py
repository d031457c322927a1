"""Versioned PostgreSQL migrations for Arbiter's durable player data.

`migrate(conn_or_pool, schema)` applies, in order, every migration in `MIGRATIONS` that the schema's
`schema_migrations` table does not list yet, each in its own transaction, and returns the versions it
applied (an empty list when the schema was already current). A session-level advisory lock, keyed by
the schema name, serializes servers that start at the same moment: the second one waits, then finds
nothing to do.

The SQL is kept in this module (not in data files) so an installed package always carries it.
Migrations are append-only: never edit one that has shipped, add the next version. An applied
migration whose SQL no longer matches (by SHA-256) makes `migrate` raise `MigrationError`.
See docs/durability.md, section "PostgreSQL".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Final

import asyncpg

log = logging.getLogger(__name__)

_SCHEMA_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# First key of the two-int advisory lock: "Arbi" in ASCII, so it does not collide with other users of
# advisory locks in a shared database; the second key is derived from the schema name.
_LOCK_CLASS: Final = 0x41726269


class MigrationError(RuntimeError):
    """The database's migration history does not match this code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


# Unqualified names: each migration runs with search_path set to the target schema.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "initial: accounts, game_progress, transactions",
        """
CREATE TABLE accounts (
    account_id   TEXT PRIMARY KEY,
    display_name TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (account, campaign): the player's durable progress, newest tick wins.
CREATE TABLE game_progress (
    account_id   TEXT NOT NULL REFERENCES accounts (account_id),
    campaign_id  TEXT NOT NULL,
    tick         BIGINT NOT NULL,
    resources    JSONB NOT NULL DEFAULT '{}'::jsonb,   -- {"<resource id>": amount}
    buildings    INTEGER NOT NULL DEFAULT 0,
    achievements BIGINT NOT NULL DEFAULT 0,            -- bitmask (bit i = achievement i)
    last_x       DOUBLE PRECISION,
    last_y       DOUBLE PRECISION,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, campaign_id)
);

-- The resource ledger. txn_id is chosen by the engine, deterministically, so a retried batch or a
-- replayed journal re-inserts the same ids and ON CONFLICT DO NOTHING keeps exactly one row.
CREATE TABLE transactions (
    txn_id        TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (account_id),
    campaign_id   TEXT NOT NULL,
    tick          BIGINT NOT NULL CHECK (tick >= 0),
    kind          TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 32),
    resource      SMALLINT NOT NULL,
    amount        BIGINT NOT NULL,
    balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX transactions_account_idx ON transactions (account_id, campaign_id, tick);
""",
    ),
    Migration(
        2,
        "fair play: bans, audit_log",
        """
-- campaign_id NULL = banned from every campaign; until NULL = permanent.
CREATE TABLE bans (
    ban_id      BIGSERIAL PRIMARY KEY,
    account_id  TEXT NOT NULL,
    campaign_id TEXT,
    reason      TEXT NOT NULL,
    until       TIMESTAMPTZ,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX bans_account_idx ON bans (account_id);

-- event_id is chosen by the writer (or the engine) at enqueue time so that retries stay exactly-once.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    ts          TIMESTAMPTZ NOT NULL DEFAULT now(),
    campaign_id TEXT,
    account_id  TEXT,
    action      TEXT NOT NULL,
    evidence    JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_account_idx ON audit_log (account_id, ts);
CREATE INDEX audit_log_campaign_idx ON audit_log (campaign_id, ts);
""",
    ),
    Migration(
        3,
        "fair play: IP-range bans, lifted bans kept as history, audit log by time",
        """
-- An IP-range ban has no account; a ban names an account, a range, or both. ip_range is CIDR text,
-- validated by persistence/pg_fairplay.py; the cast in the CHECK also stops a malformed one written by hand.
-- IF [NOT] EXISTS throughout: re-running this on a schema that already has it changes nothing.
ALTER TABLE bans ALTER COLUMN account_id DROP NOT NULL;
ALTER TABLE bans ADD COLUMN IF NOT EXISTS ip_range  TEXT;
ALTER TABLE bans ADD COLUMN IF NOT EXISTS lifted_at TIMESTAMPTZ;
ALTER TABLE bans ADD COLUMN IF NOT EXISTS lifted_by TEXT;
ALTER TABLE bans DROP CONSTRAINT IF EXISTS bans_target_check;
ALTER TABLE bans ADD CONSTRAINT bans_target_check
    CHECK ((account_id IS NOT NULL OR ip_range IS NOT NULL) AND (ip_range IS NULL OR masklen(ip_range::cidr) >= 0));
-- Start-up loads the bans not lifted; lifted rows are kept forever, so keep them out of that scan.
CREATE INDEX IF NOT EXISTS bans_not_lifted_idx ON bans (ban_id) WHERE lifted_at IS NULL;
-- read_audit without an account or campaign filter: newest first over the whole log.
CREATE INDEX IF NOT EXISTS audit_log_ts_idx ON audit_log (ts);
""",
    ),
    Migration(
        4,
        "fair play: the last transfer id a player applied, so a retry after a rejoin stays idempotent",
        """
ALTER TABLE game_progress ADD COLUMN IF NOT EXISTS txn_last BIGINT NOT NULL DEFAULT 0;
""",
    ),
    # 5..19: the hub (hub/, docs/hub.md).
    Migration(
        5,
        "hub: accounts with credentials, session families and rotating refresh tokens",
        """
-- The v1 accounts table is the accounts table: game servers create rows for token subjects they see;
-- the hub adds credentials. handle/email are unique case-insensitively; device_hash is sha256 of a
-- guest's device id (a bearer secret, so never stored in clear).
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS handle TEXT;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS email TEXT;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS password_hash TEXT;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS device_hash TEXT;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS is_guest BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS role TEXT NOT NULL DEFAULT 'player';
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS muted_until TIMESTAMPTZ;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE accounts ADD CONSTRAINT accounts_role_check CHECK (role IN ('player', 'admin'));
CREATE UNIQUE INDEX IF NOT EXISTS accounts_handle_uq ON accounts (lower(handle)) WHERE handle IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS accounts_email_uq ON accounts (lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS accounts_device_uq ON accounts (device_hash) WHERE device_hash IS NOT NULL;

-- One family per login: every refresh token a login leads to belongs to it. Reusing a rotated token
-- revokes the family (RFC 9700 section 4.14.2).
CREATE TABLE session_families (
    family_id     TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (account_id),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    revoke_reason TEXT,
    user_agent    TEXT NOT NULL DEFAULT '',
    ip            TEXT NOT NULL DEFAULT ''
);
CREATE INDEX session_families_account_idx ON session_families (account_id) WHERE revoked_at IS NULL;
CREATE INDEX session_families_revoked_idx ON session_families (revoked_at) WHERE revoked_at IS NOT NULL;

-- token_hash = sha256 of the opaque token (256 random bits, so a fast hash is enough).
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES session_families (family_id) ON DELETE CASCADE,
    issued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
""",
    ),
    Migration(
        6,
        "hub: campaigns and memberships",
        """
CREATE TABLE campaigns (
    campaign_id  TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES accounts (account_id),
    title        TEXT NOT NULL,
    game         TEXT NOT NULL,
    seed         BIGINT NOT NULL,
    config       JSONB NOT NULL DEFAULT '{}'::jsonb,
    max_players  INTEGER NOT NULL CHECK (max_players BETWEEN 1 AND 1000),
    visibility   TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    invite_code  TEXT,
    status       TEXT NOT NULL CHECK (status IN ('scheduled', 'open', 'running', 'completed', 'archived')),
    schedule     JSONB NOT NULL DEFAULT '{}'::jsonb,
    starts_at    TIMESTAMPTZ,
    ends_at      TIMESTAMPTZ,
    server_id    TEXT,            -- where it runs (or last ran)
    data_at      TEXT,            -- the placement handler whose disk holds its campaign.sqlite
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    archived_at  TIMESTAMPTZ
);
CREATE INDEX campaigns_discover_idx ON campaigns (status, game, created_at) WHERE visibility = 'public';
CREATE INDEX campaigns_owner_idx ON campaigns (owner_id);

CREATE TABLE campaign_members (
    campaign_id TEXT NOT NULL REFERENCES campaigns (campaign_id),
    account_id  TEXT NOT NULL REFERENCES accounts (account_id),
    role        TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    kicked_at   TIMESTAMPTZ,
    PRIMARY KEY (campaign_id, account_id)
);
CREATE INDEX campaign_members_account_idx ON campaign_members (account_id);
""",
    ),
    Migration(
        7,
        "hub: friends, friend requests, blocks, chat history",
        """
CREATE TABLE friend_requests (
    from_id    TEXT NOT NULL REFERENCES accounts (account_id),
    to_id      TEXT NOT NULL REFERENCES accounts (account_id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (from_id, to_id),
    CHECK (from_id <> to_id)
);
CREATE INDEX friend_requests_to_idx ON friend_requests (to_id);

-- Both directions are stored, so "my friends" is one index scan.
CREATE TABLE friends (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    friend_id  TEXT NOT NULL REFERENCES accounts (account_id),
    since      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, friend_id),
    CHECK (account_id <> friend_id)
);

CREATE TABLE blocks (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    blocked_id TEXT NOT NULL REFERENCES accounts (account_id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, blocked_id),
    CHECK (account_id <> blocked_id)
);
CREATE INDEX blocks_blocked_idx ON blocks (blocked_id);

-- channel: 'c:<campaign id>' or 'dm:<account a>:<account b>' (a < b). client_msg_id makes a retried
-- post idempotent: the second insert finds the first row.
CREATE TABLE chat_messages (
    message_id    BIGSERIAL PRIMARY KEY,
    channel       TEXT NOT NULL,
    sender_id     TEXT NOT NULL REFERENCES accounts (account_id),
    body          TEXT NOT NULL,
    client_msg_id TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (sender_id, client_msg_id)
);
CREATE INDEX chat_messages_channel_idx ON chat_messages (channel, message_id);
""",
    ),
    Migration(
        8,
        "hub: player reports",
        """
CREATE TABLE reports (
    report_id   BIGSERIAL PRIMARY KEY,
    reporter_id TEXT NOT NULL REFERENCES accounts (account_id),
    target_id   TEXT NOT NULL REFERENCES accounts (account_id),
    reason      TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '',
    evidence    JSONB NOT NULL DEFAULT '{}'::jsonb,
    campaign_id TEXT,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'dismissed', 'actioned')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ,
    resolved_by TEXT,
    resolution  TEXT
);
CREATE INDEX reports_status_idx ON reports (status, report_id);
CREATE INDEX reports_target_idx ON reports (target_id);
""",
    ),
    # 5-19: the hub (#11); 20-29: the fleet (#12, this one); 30-34: door hardening (#9).
    Migration(
        20,
        "relocation: campaigns' snapshots and journal shipped to PostgreSQL",
        """
-- One row per shipped campaign. epoch is a fencing token: a server takes the campaign by raising it,
-- and every write checks it, so a server presumed dead can never append to a campaign that moved on.
-- journal_tick: every journal record up to it is here; snapshot_tick 0 = no snapshot (the genesis).
CREATE TABLE shipped_campaigns (
    campaign_id   TEXT PRIMARY KEY,
    meta          JSONB NOT NULL,
    epoch         BIGINT NOT NULL CHECK (epoch >= 1),
    owner         TEXT NOT NULL,
    journal_tick  BIGINT NOT NULL DEFAULT 0 CHECK (journal_tick >= 0),
    snapshot_tick BIGINT NOT NULL DEFAULT 0 CHECK (snapshot_tick >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- World snapshots exactly as the campaign's SQLite keeps them (zlib of the raw blob, CRC-32 of the raw).
CREATE TABLE shipped_snapshots (
    campaign_id TEXT NOT NULL REFERENCES shipped_campaigns (campaign_id) ON DELETE CASCADE,
    tick        BIGINT NOT NULL CHECK (tick >= 0),
    state_hash  TEXT NOT NULL,
    blob        BYTEA NOT NULL,
    crc         BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, tick)
);

-- Journal segments: consecutive records first_tick..last_tick, msgpack then zlib (persistence/pg_ship.py).
CREATE TABLE shipped_journal (
    campaign_id TEXT NOT NULL REFERENCES shipped_campaigns (campaign_id) ON DELETE CASCADE,
    first_tick  BIGINT NOT NULL CHECK (first_tick >= 1),
    last_tick   BIGINT NOT NULL,
    records     INTEGER NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (campaign_id, first_tick),
    CHECK (last_tick >= first_tick AND records = last_tick - first_tick + 1)
);
""",
    ),
    Migration(
        30,
        "door: a returning ship keeps its saved velocity as well as its position",
        """
ALTER TABLE game_progress ADD COLUMN IF NOT EXISTS last_vx DOUBLE PRECISION;
ALTER TABLE game_progress ADD COLUMN IF NOT EXISTS last_vy DOUBLE PRECISION;
""",
    ),
)


def check_schema_name(schema: str) -> str:
    """Schema names are interpolated into SQL: accept only plain lowercase identifiers."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r} (want [a-z_][a-z0-9_]*, at most 63 chars)")
    return schema


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"arbiter.migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


async def migrate(
    conn_or_pool: asyncpg.Connection | asyncpg.Pool,
    schema: str = "public",
    *,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Bring `schema` up to the newest migration; return the versions applied by this call."""
    check_schema_name(schema)
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migration versions must be unique and increasing")
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await _migrate(conn, schema, migrations)
    return await _migrate(conn_or_pool, schema, migrations)


async def _migrate(conn: asyncpg.Connection, schema: str, migrations: tuple[Migration, ...]) -> list[int]:
    key = _lock_key(schema)
    await conn.execute("SELECT pg_advisory_lock($1, $2)", _LOCK_CLASS, key)
    try:
        # Under the lock: concurrent CREATE ... IF NOT EXISTS can still collide on the catalog.
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                        version    INTEGER PRIMARY KEY,
                        name       TEXT NOT NULL,
                        checksum   TEXT NOT NULL,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
            )
        rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
        applied = {int(r["version"]): str(r["checksum"]) for r in rows}
        known = {m.version: m for m in migrations}
        for version, checksum in sorted(applied.items()):
            migration = known.get(version)
            if migration is None:
                log.warning("schema %s has migration %d, unknown to this code (newer server?)", schema, version)
            elif migration.checksum != checksum:
                raise MigrationError(
                    f"migration {version} ({migration.name}) in schema {schema} was changed after it was applied"
                )
        done: list[int] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                # SET LOCAL: the search_path reverts at the end of this transaction.
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("schema %s: applied migration %d (%s)", schema, migration.version, migration.name)
            done.append(migration.version)
        return done
    finally:
        # A dead connection has released the lock already; do not mask the original error.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", _LOCK_CLASS, key)


async def current_version(conn: asyncpg.Connection, schema: str = "public") -> int:
    """Newest applied migration version in `schema`, 0 if none."""
    check_schema_name(schema)
    exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_migrations')
    if exists is None:
        return 0
    value = await conn.fetchval(f'SELECT max(version) FROM "{schema}".schema_migrations')
    return int(value or 0)
