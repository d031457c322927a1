"""Friends, blocks, chat history, reports and the hub's reads of bans and progress, in PostgreSQL
(migrations 7 and 8; bans and game_progress come from the game servers' migrations 1-4).

A block removes any friendship and pending request between the two, and stops new ones both ways.
Chat rows are the history of record: a message is acknowledged to its sender only once its row is
committed; `client_msg_id` makes a retried post return the first row instead of a second one.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from persistence.fairplay_records import BanRecord
from persistence.pg_fairplay import ACTIVE_BAN_SQL, BAN_COLUMNS
from persistence.redis_leaderboard import progress_score

REQUESTED: Final = "requested"
ACCEPTED: Final = "accepted"
ALREADY: Final = "already friends"
BLOCKED: Final = "blocked"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    message_id: int
    channel: str
    sender_id: str
    body: str
    created_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.message_id, "channel": self.channel, "from": self.sender_id, "text": self.body,
                "ts": self.created_at.timestamp()}  # fmt: skip


class SocialStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- blocks ------------------------------------------------------------------------------------
    async def blocked_either(self, a: str, b: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM blocks WHERE (account_id = $1 AND blocked_id = $2) "
                "OR (account_id = $2 AND blocked_id = $1))",
                a,
                b,
            )
        )

    async def block(self, account: str, other: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO blocks (account_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", account, other
            )
            await conn.execute(
                "DELETE FROM friends "
                "WHERE (account_id = $1 AND friend_id = $2) OR (account_id = $2 AND friend_id = $1)",
                account, other,
            )  # fmt: skip
            await conn.execute(
                "DELETE FROM friend_requests WHERE (from_id = $1 AND to_id = $2) OR (from_id = $2 AND to_id = $1)",
                account, other,
            )  # fmt: skip

    async def unblock(self, account: str, other: str) -> bool:
        status = await self.pool.execute("DELETE FROM blocks WHERE account_id = $1 AND blocked_id = $2", account, other)
        return status.endswith(" 1")

    async def blocks(self, account: str) -> list[str]:
        rows = await self.pool.fetch("SELECT blocked_id FROM blocks WHERE account_id = $1 ORDER BY created_at", account)
        return [r[0] for r in rows]

    # -- friends -----------------------------------------------------------------------------------
    async def request_friend(self, account: str, other: str) -> str:
        """REQUESTED, ACCEPTED (the other had asked first), ALREADY or BLOCKED."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM blocks WHERE (account_id = $1 AND blocked_id = $2) "
                "OR (account_id = $2 AND blocked_id = $1))",
                account, other,
            ):  # fmt: skip
                return BLOCKED
            if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM friends WHERE account_id = $1 AND friend_id = $2)", account, other
            ):
                return ALREADY
            reverse = await conn.execute(
                "DELETE FROM friend_requests WHERE from_id = $2 AND to_id = $1", account, other
            )
            if reverse.endswith(" 1"):
                await _befriend(conn, account, other)
                return ACCEPTED
            await conn.execute(
                "INSERT INTO friend_requests (from_id, to_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", account, other
            )
            return REQUESTED

    async def accept_friend(self, account: str, requester: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM friend_requests WHERE from_id = $2 AND to_id = $1", account, requester
            )
            if not status.endswith(" 1"):
                return False
            await _befriend(conn, account, requester)
            return True

    async def decline_friend(self, account: str, requester: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM friend_requests WHERE (from_id = $2 AND to_id = $1) OR (from_id = $1 AND to_id = $2)",
            account, requester,
        )  # fmt: skip
        return not status.endswith(" 0")

    async def remove_friend(self, account: str, other: str) -> bool:
        status = await self.pool.execute(
            "DELETE FROM friends WHERE (account_id = $1 AND friend_id = $2) OR (account_id = $2 AND friend_id = $1)",
            account, other,
        )  # fmt: skip
        return not status.endswith(" 0")

    async def friends(self, account: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT friend_id FROM friends WHERE account_id = $1 ORDER BY since, friend_id", account
        )
        return [r[0] for r in rows]

    async def requests(self, account: str) -> tuple[list[str], list[str]]:
        """(incoming, outgoing) pending requests."""
        rows = await self.pool.fetch(
            "SELECT from_id, to_id FROM friend_requests WHERE from_id = $1 OR to_id = $1 ORDER BY created_at", account
        )
        return [r[0] for r in rows if r[1] == account], [r[1] for r in rows if r[0] == account]

    # -- chat --------------------------------------------------------------------------------------
    async def post(self, channel: str, sender: str, body: str, client_msg_id: str | None) -> tuple[ChatMessage, bool]:
        """Store a message; (the row, True if it was new). A repeated client_msg_id returns the first row."""
        row = await self.pool.fetchrow(
            "INSERT INTO chat_messages (channel, sender_id, body, client_msg_id) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (sender_id, client_msg_id) DO NOTHING "
            "RETURNING message_id, channel, sender_id, body, created_at",
            channel, sender, body, client_msg_id,
        )  # fmt: skip
        if row is not None:
            return ChatMessage(*row.values()), True
        assert client_msg_id is not None
        old = await self.by_client_msg_id(sender, client_msg_id)
        assert old is not None
        return old, False

    async def by_client_msg_id(self, sender: str, client_msg_id: str) -> ChatMessage | None:
        r = await self.pool.fetchrow(
            "SELECT message_id, channel, sender_id, body, created_at FROM chat_messages "
            "WHERE sender_id = $1 AND client_msg_id = $2",
            sender, client_msg_id,
        )  # fmt: skip
        return None if r is None else ChatMessage(*r.values())

    async def history(self, channel: str, limit: int, before: int | None = None) -> list[ChatMessage]:
        """The last `limit` messages of a channel (before message id `before`), oldest first."""
        rows = await self.pool.fetch(
            "SELECT message_id, channel, sender_id, body, created_at FROM chat_messages WHERE channel = $1 "
            "AND ($2::int8 IS NULL OR message_id < $2) ORDER BY message_id DESC LIMIT $3",
            channel, before, limit,
        )  # fmt: skip
        return [ChatMessage(*r.values()) for r in reversed(rows)]

    async def message(self, message_id: int) -> ChatMessage | None:
        r = await self.pool.fetchrow(
            "SELECT message_id, channel, sender_id, body, created_at FROM chat_messages WHERE message_id = $1",
            message_id,
        )
        return None if r is None else ChatMessage(*r.values())

    # -- bans (the game servers' table) and mutes -----------------------------------------------------
    async def active_ban(self, account: str, campaign: str | None) -> BanRecord | None:
        """An account ban in force now, everywhere or (with `campaign`) in that campaign."""
        r = await self.pool.fetchrow(
            f"SELECT {BAN_COLUMNS} FROM bans WHERE account_id = $2 AND ({ACTIVE_BAN_SQL}) "
            "AND (campaign_id IS NULL OR campaign_id = $3) ORDER BY ban_id LIMIT 1",
            time.time(), account, campaign,
        )  # fmt: skip
        return None if r is None else BanRecord.from_row(tuple(r))

    async def muted(self, account: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT coalesce(muted_until > now(), false) FROM accounts WHERE account_id = $1", account
            )
        )

    # -- reports -----------------------------------------------------------------------------------
    async def add_report(
        self, reporter: str, target: str, reason: str, details: str, evidence: dict[str, Any], campaign: str | None
    ) -> int:
        value = await self.pool.fetchval(
            "INSERT INTO reports (reporter_id, target_id, reason, details, evidence, campaign_id) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING report_id",
            reporter, target, reason, details, json.dumps(evidence), campaign,
        )  # fmt: skip
        return int(value)

    async def reports(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT report_id, reporter_id, target_id, reason, details, evidence::text, campaign_id, status, "
            "created_at, resolved_at, resolved_by, resolution FROM reports WHERE ($1::text IS NULL OR status = $1) "
            "ORDER BY report_id DESC LIMIT $2",
            status, limit,
        )  # fmt: skip
        out = []
        for r in rows:
            d = dict(r)
            d["evidence"] = json.loads(d["evidence"])
            out.append(d)
        return out

    async def resolve_report(
        self, report_id: int, status: str, by: str, resolution: str, *, in_campaign: bool = False
    ) -> dict[str, Any] | None:
        """Close an open report (None: no such open report, or with `in_campaign` not one made in a
        campaign); its target and campaign."""
        r = await self.pool.fetchrow(
            "UPDATE reports SET status = $2, resolved_by = $3, resolution = $4, resolved_at = now() "
            "WHERE report_id = $1 AND status = 'open' AND (NOT $5 OR campaign_id IS NOT NULL) "
            "RETURNING target_id, campaign_id",
            report_id, status, by, resolution, in_campaign,
        )  # fmt: skip
        return None if r is None else {"target_id": r[0], "campaign_id": r[1]}

    # -- leaderboard source ------------------------------------------------------------------------
    async def scores(self, batch: int = 2000) -> AsyncIterator[tuple[str, str, int]]:
        """(campaign, account, score) for every progress row, streamed in batches."""
        last: tuple[str, str] = ("", "")
        while True:
            rows = await self.pool.fetch(
                "SELECT campaign_id, account_id, resources::text, buildings, achievements FROM game_progress "
                "WHERE (campaign_id, account_id) > ($1, $2) ORDER BY campaign_id, account_id LIMIT $3",
                last[0], last[1], batch,
            )  # fmt: skip
            for campaign, account, resources, buildings, achievements in rows:
                yield campaign, account, progress_score(json.loads(resources), buildings, achievements)
            if len(rows) < batch:
                return
            last = (rows[-1][0], rows[-1][1])


async def _befriend(conn: asyncpg.Connection, a: str, b: str) -> None:
    await conn.execute(
        "INSERT INTO friends (account_id, friend_id) VALUES ($1, $2), ($2, $1) ON CONFLICT DO NOTHING", a, b
    )
