"""The SQL of the write-behind (persistence/pg_writer.py): its four tables' statements for one
schema, and the write of a batch of rows with one `unnest` statement per table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from persistence.pg_rows import ACCOUNT, AUDIT, PROGRESS, TXN, PendingRow


class RowSql:
    def __init__(self, schema: str) -> None:
        """`schema` must already be checked (persistence.pg_migrations.check_schema_name)."""
        s = f'"{schema}"'
        self.accounts_ensure = (
            f"INSERT INTO {s}.accounts (account_id) SELECT unnest($1::text[]) ON CONFLICT (account_id) DO NOTHING"
        )
        self.accounts_upsert = (
            f"INSERT INTO {s}.accounts (account_id, display_name) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT (account_id) DO UPDATE SET display_name = EXCLUDED.display_name"
        )
        self.txn = (
            f"INSERT INTO {s}.transactions (txn_id, account_id, campaign_id, tick, kind, resource, amount, "
            "balance_after, created_at) "
            "SELECT t.txn_id, t.account_id, t.campaign_id, t.tick, t.kind, t.resource, t.amount, t.balance_after, "
            "to_timestamp(t.ts) FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], "
            "$6::int2[], $7::int8[], $8::int8[], $9::float8[]) "
            "AS t(txn_id, account_id, campaign_id, tick, kind, resource, amount, balance_after, ts) "
            "ON CONFLICT (txn_id) DO NOTHING"
        )
        self.progress = (
            f"INSERT INTO {s}.game_progress AS g (account_id, campaign_id, tick, resources, buildings, "
            "achievements, last_x, last_y, updated_at, txn_last, last_vx, last_vy) "
            "SELECT p.account_id, p.campaign_id, p.tick, p.resources::jsonb, p.buildings, p.achievements, "
            "p.last_x, p.last_y, to_timestamp(p.ts), p.txn_last, p.last_vx, p.last_vy FROM unnest($1::text[], "
            "$2::text[], $3::int8[], $4::text[], $5::int4[], $6::int8[], $7::float8[], $8::float8[], $9::float8[], "
            "$10::int8[], $11::float8[], $12::float8[]) "
            "AS p(account_id, campaign_id, tick, resources, buildings, achievements, last_x, last_y, ts, txn_last, "
            "last_vx, last_vy) "
            "ON CONFLICT (account_id, campaign_id) DO UPDATE SET tick = EXCLUDED.tick, "
            "resources = EXCLUDED.resources, buildings = EXCLUDED.buildings, "
            "achievements = EXCLUDED.achievements, last_x = EXCLUDED.last_x, last_y = EXCLUDED.last_y, "
            "last_vx = EXCLUDED.last_vx, last_vy = EXCLUDED.last_vy, "
            "updated_at = EXCLUDED.updated_at, txn_last = GREATEST(g.txn_last, EXCLUDED.txn_last) "
            "WHERE g.tick <= EXCLUDED.tick"
        )
        self.audit = (
            f"INSERT INTO {s}.audit_log (event_id, ts, campaign_id, account_id, action, evidence) "
            "SELECT a.event_id, to_timestamp(a.ts), a.campaign_id, a.account_id, a.action, a.evidence::jsonb "
            "FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[], $6::text[]) "
            "AS a(event_id, ts, campaign_id, account_id, action, evidence) "
            "ON CONFLICT (event_id) DO NOTHING"
        )
        self.load = (
            "SELECT account_id, campaign_id, tick, resources::text AS resources, buildings, achievements, "
            f"last_x, last_y, updated_at, txn_last, last_vx, last_vy FROM {s}.game_progress "
            "WHERE account_id = $1 AND campaign_id = $2"
        )

    async def write(self, conn: asyncpg.Connection, rows: Iterable[PendingRow], known: set[str] | None) -> int:
        """Insert/upsert `rows` in the caller's transaction, one statement per table; accounts in
        `known` are taken to exist already. Returns how many rows ON CONFLICT DO NOTHING skipped."""
        dups = 0
        txns: list[tuple[Any, ...]] = []
        progress: dict[tuple[Any, Any], tuple[Any, ...]] = {}
        accounts: dict[Any, Any] = {}
        audits: list[tuple[Any, ...]] = []
        for row in rows:
            v = row.values
            if row.table == TXN:
                txns.append(v)
            elif row.table == PROGRESS:
                # One statement may not update a row twice: keep the newest per key.
                old = progress.get((v[0], v[1]))
                if old is None or v[2] >= old[2]:
                    progress[(v[0], v[1])] = v
            elif row.table == ACCOUNT:
                accounts[v[0]] = v[1]
            elif row.table == AUDIT:
                audits.append(v)
            else:
                raise ValueError(f"unknown row table {row.table!r}")

        referenced = {v[1] for v in txns} | {k[0] for k in progress}
        referenced -= accounts.keys()
        if known is not None:
            referenced -= known
        if accounts:
            names = sorted(accounts.items(), key=lambda kv: str(kv[0]))  # fixed order: no deadlocks
            await conn.execute(self.accounts_upsert, [k for k, _ in names], [n for _, n in names])
        if referenced:
            await conn.execute(self.accounts_ensure, sorted(referenced, key=str))
        if txns:
            status = await conn.execute(self.txn, *map(list, zip(*txns, strict=True)))
            dups += len(txns) - _rowcount(status)
        if progress:
            # Rows spilled by an older version lack txn_last (v4) and the velocity (v30).
            pad = (0, None, None)
            ordered = [(*v, *pad[len(v) - 9 :]) for v in (progress[k] for k in sorted(progress, key=str))]
            await conn.execute(self.progress, *map(list, zip(*ordered, strict=True)))
        if audits:
            status = await conn.execute(self.audit, *map(list, zip(*audits, strict=True)))
            dups += len(audits) - _rowcount(status)
        return dups


def _rowcount(status: str) -> int:
    # "INSERT 0 <n>"
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
