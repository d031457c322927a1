"""Campaigns and memberships in PostgreSQL (migration 6), for the hub.

Status changes are conditional UPDATEs (`WHERE status = ANY(...)`), so two hub processes sweeping
the lifecycle at once, or a sweep racing a placement, change a campaign once. Times come from
PostgreSQL's `now()`: hub processes on different machines agree on them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

_COLUMNS: Final = (
    "campaign_id, owner_id, title, game, seed, config::text, max_players, visibility, invite_code, status, "
    "schedule::text, starts_at, ends_at, server_id, data_at, created_at, completed_at, archived_at"
)
LIVE_STATUSES: Final = ("scheduled", "open", "running")


@dataclass(frozen=True, slots=True)
class CampaignRow:
    campaign_id: str
    owner_id: str
    title: str
    game: str
    seed: int
    config: dict[str, Any]
    max_players: int
    visibility: str
    invite_code: str | None
    status: str
    schedule: dict[str, Any]
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    server_id: str | None
    data_at: str | None
    created_at: dt.datetime
    completed_at: dt.datetime | None
    archived_at: dt.datetime | None

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> CampaignRow:
        v = list(r.values())[:18]
        v[5] = json.loads(v[5])
        v[10] = json.loads(v[10])
        return cls(*v)


@dataclass(frozen=True, slots=True)
class Member:
    account_id: str
    role: str
    joined_at: dt.datetime
    kicked: bool


def like_pattern(text: str) -> str:
    """`text` as a literal inside ILIKE '%...%' (its own % _ and \\ escaped)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class CampaignStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, row: dict[str, Any]) -> CampaignRow:
        """Insert a campaign (keys: the columns of CampaignRow that the hub sets) and its owner."""
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await conn.fetchrow(
                "INSERT INTO campaigns (campaign_id, owner_id, title, game, seed, config, max_players, visibility, "
                "invite_code, status, schedule, starts_at, ends_at) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11::jsonb, $12, $13) "
                f"RETURNING {_COLUMNS}",
                row["campaign_id"], row["owner_id"], row["title"], row["game"], row["seed"],
                json.dumps(row["config"]), row["max_players"], row["visibility"], row["invite_code"], row["status"],
                json.dumps(row["schedule"]), row["starts_at"], row["ends_at"],
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO campaign_members (campaign_id, account_id, role) VALUES ($1, $2, 'owner')",
                row["campaign_id"], row["owner_id"],
            )  # fmt: skip
        assert rec is not None
        return CampaignRow.from_row(rec)

    async def get(self, campaign_id: str) -> CampaignRow | None:
        rec = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM campaigns WHERE campaign_id = $1", campaign_id)
        return None if rec is None else CampaignRow.from_row(rec)

    async def discover(
        self, *, game: str | None, statuses: Sequence[str], text: str | None, limit: int, offset: int
    ) -> list[tuple[CampaignRow, int]]:
        """Public campaigns (with their member count), newest first."""
        recs = await self.pool.fetch(
            f"SELECT {_COLUMNS}, (SELECT count(*) FROM campaign_members m WHERE m.campaign_id = c.campaign_id "
            "AND m.kicked_at IS NULL) FROM campaigns c WHERE visibility = 'public' "
            "AND ($1::text IS NULL OR game = $1) AND status = ANY($2::text[]) "
            "AND ($3::text IS NULL OR title ILIKE $3 ESCAPE '\\') "
            "ORDER BY created_at DESC, campaign_id LIMIT $4 OFFSET $5",
            game, list(statuses), None if text is None else like_pattern(text), limit, offset,
        )  # fmt: skip
        return [(CampaignRow.from_row(r), int(r[18])) for r in recs]

    async def of_member(self, account_id: str) -> list[CampaignRow]:
        recs = await self.pool.fetch(
            f"SELECT {', '.join('c.' + c for c in _COLUMNS.split(', '))} FROM campaigns c "
            "JOIN campaign_members m USING (campaign_id) WHERE m.account_id = $1 AND m.kicked_at IS NULL "
            "ORDER BY c.created_at DESC LIMIT 200",
            account_id,
        )
        return [CampaignRow.from_row(r) for r in recs]

    # -- membership --------------------------------------------------------------------------------
    async def member(self, campaign_id: str, account_id: str) -> Member | None:
        r = await self.pool.fetchrow(
            "SELECT account_id, role, joined_at, kicked_at IS NOT NULL FROM campaign_members "
            "WHERE campaign_id = $1 AND account_id = $2",
            campaign_id, account_id,
        )  # fmt: skip
        return None if r is None else Member(r[0], r[1], r[2], r[3])

    async def add_member(self, campaign_id: str, account_id: str) -> bool:
        """Join as a member; False when the account was kicked from it (it stays out)."""
        status = await self.pool.execute(
            "INSERT INTO campaign_members (campaign_id, account_id, role) VALUES ($1, $2, 'member') "
            "ON CONFLICT (campaign_id, account_id) DO NOTHING",
            campaign_id, account_id,
        )  # fmt: skip
        if status.endswith(" 1"):
            return True
        m = await self.member(campaign_id, account_id)
        return m is not None and not m.kicked

    async def kick(self, campaign_id: str, account_id: str) -> bool:
        status = await self.pool.execute(
            "UPDATE campaign_members SET kicked_at = now() WHERE campaign_id = $1 AND account_id = $2 "
            "AND role <> 'owner' AND kicked_at IS NULL",
            campaign_id, account_id,
        )  # fmt: skip
        return status.endswith(" 1")

    async def leave(self, campaign_id: str, account_id: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM campaign_members WHERE campaign_id = $1 AND account_id = $2 AND role <> 'owner' "
            "AND kicked_at IS NULL",
            campaign_id, account_id,
        )  # fmt: skip
        return status.endswith(" 1")

    async def members(self, campaign_id: str) -> list[Member]:
        rows = await self.pool.fetch(
            "SELECT account_id, role, joined_at, kicked_at IS NOT NULL FROM campaign_members "
            "WHERE campaign_id = $1 AND kicked_at IS NULL ORDER BY joined_at, account_id",
            campaign_id,
        )
        return [Member(r[0], r[1], r[2], r[3]) for r in rows]

    async def member_ids(self, campaign_id: str) -> list[str]:
        return [m.account_id for m in await self.members(campaign_id)]

    # -- lifecycle and placement -------------------------------------------------------------------
    async def set_status(self, campaign_id: str, from_: Sequence[str], to: str, **fields: Any) -> bool:
        """Move to `to` only from one of `from_`; `fields` among server_id, data_at, starts_at, ends_at."""
        allowed = {"server_id", "data_at", "starts_at", "ends_at"}
        if set(fields) - allowed:
            raise ValueError(f"cannot set {sorted(set(fields) - allowed)}")
        sets = ["status = $3", "updated_at = now()"]
        args: list[Any] = [campaign_id, list(from_), to]
        for name, value in sorted(fields.items()):
            args.append(value)
            sets.append(f"{name} = ${len(args)}")
        if to == "completed":
            sets.append("completed_at = now()")
        if to == "archived":
            sets.append("archived_at = now()")
        status = await self.pool.execute(
            f"UPDATE campaigns SET {', '.join(sets)} WHERE campaign_id = $1 AND status = ANY($2::text[])", *args
        )
        return status.endswith(" 1")

    async def set_placement(self, campaign_id: str, server_id: str, data_at: str) -> None:
        await self.pool.execute(
            "UPDATE campaigns SET server_id = $2, data_at = coalesce(data_at, $3), updated_at = now(), "
            "status = CASE WHEN status = 'open' THEN 'running' ELSE status END WHERE campaign_id = $1",
            campaign_id, server_id, data_at,
        )  # fmt: skip

    async def ended(self) -> list[CampaignRow]:
        """Live campaigns whose current slot (or one-shot window) is over."""
        recs = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM campaigns WHERE status = ANY($1::text[]) AND ends_at IS NOT NULL "
            "AND ends_at <= now()",
            list(LIVE_STATUSES),
        )
        return [CampaignRow.from_row(r) for r in recs]

    async def open_due(self) -> list[str]:
        rows = await self.pool.fetch(
            "UPDATE campaigns SET status = 'open', updated_at = now() WHERE status = 'scheduled' "
            "AND starts_at <= now() AND (ends_at IS NULL OR ends_at > now()) RETURNING campaign_id"
        )
        return [r[0] for r in rows]

    async def running(self) -> list[CampaignRow]:
        recs = await self.pool.fetch(f"SELECT {_COLUMNS} FROM campaigns WHERE status = 'running'")
        return [CampaignRow.from_row(r) for r in recs]

    async def archive_due(self, after_s: float) -> list[str]:
        rows = await self.pool.fetch(
            "UPDATE campaigns SET status = 'archived', archived_at = now(), updated_at = now() "
            "WHERE status = 'completed' AND completed_at <= now() - make_interval(secs => $1) RETURNING campaign_id",
            after_s,
        )
        return [r[0] for r in rows]

    async def advance_slot(self, campaign_id: str, old_end: dt.datetime, start: dt.datetime, end: dt.datetime) -> bool:
        """A weekly campaign whose slot ended waits for its next one (only if nobody did it already)."""
        status = await self.pool.execute(
            "UPDATE campaigns SET status = 'scheduled', starts_at = $3, ends_at = $4, updated_at = now() "
            "WHERE campaign_id = $1 AND ends_at = $2 AND status = ANY($5::text[])",
            campaign_id, old_end, start, end, list(LIVE_STATUSES),
        )  # fmt: skip
        return status.endswith(" 1")

    async def history(self, account_id: str, *, public_only: bool) -> list[dict[str, Any]]:
        """The account's campaigns with its progress in each (for the profile)."""
        rows = await self.pool.fetch(
            "SELECT c.campaign_id, c.title, c.game, c.status, m.role, m.joined_at, p.resources::text, p.buildings, "
            "p.achievements, p.updated_at FROM campaign_members m JOIN campaigns c USING (campaign_id) "
            "LEFT JOIN game_progress p ON p.account_id = m.account_id AND p.campaign_id = m.campaign_id "
            "WHERE m.account_id = $1 AND m.kicked_at IS NULL AND (NOT $2 OR c.visibility = 'public') "
            "ORDER BY m.joined_at DESC LIMIT 100",
            account_id, public_only,
        )  # fmt: skip
        out = []
        for r in rows:
            out.append({
                "campaign_id": r[0], "title": r[1], "game": r[2], "status": r[3], "role": r[4], "joined_at": r[5],
                "resources": json.loads(r[6]) if r[6] else {}, "buildings": r[7] or 0,
                "achievements": (r[8] or 0) % (1 << 64), "last_played": r[9],
            })  # fmt: skip
        return out
