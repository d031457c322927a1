"""`/v1/campaigns...`: create, discover, details, membership, join, lifecycle, replay.

A private campaign is invisible (404) to anyone who is neither a member nor holding its invite code;
its invite code is shown to its members only. A kicked member stays out.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from hub import schedule as sched
from hub import validate as v
from hub.http import body, no_query, ok, params, principal, refuse
from hub.placement import Waiting
from hub.sessions import Principal, new_id
from hub.state import HUB_KEY, Hub
from persistence.pg_hub_campaigns import LIVE_STATUSES, CampaignRow, Member
from persistence.redis_layout import REDIS_DOWN
from persistence.redis_registry import ServerRecord

routes = web.RouteTableDef()

STATUSES = ("scheduled", "open", "running", "completed", "archived")
_INVITE = v.pattern(v.CODE_RE, "an invite code")


def _game(hub: Hub) -> v.Check:
    def check(name: str, value: Any) -> str:
        game = v.pattern(v.GAME_RE, "a game id (a-z 0-9 _)")(name, value)
        if hub.cfg.games and game not in hub.cfg.games:
            v.fail(name, f"must be one of {', '.join(hub.cfg.games)}")
        return game

    return check


def view(row: CampaignRow, *, members: int | None = None, live: ServerRecord | None = None,
         member: Member | None = None) -> dict[str, Any]:  # fmt: skip
    """A campaign as a client sees it (the invite code only for its members)."""
    load = live.campaigns.get(row.campaign_id) if live is not None else None
    out: dict[str, Any] = {
        "campaign_id": row.campaign_id, "title": row.title, "game": row.game, "seed": row.seed,
        "config": row.config, "max_players": row.max_players, "visibility": row.visibility, "status": row.status,
        "schedule": row.schedule, "starts_at": row.starts_at, "ends_at": row.ends_at, "owner_id": row.owner_id,
        "created_at": row.created_at, "completed_at": row.completed_at, "archived_at": row.archived_at,
        "players": load.ccu if load is not None else 0,
    }  # fmt: skip
    out["free_seats"] = max(0, row.max_players - out["players"])
    if members is not None:
        out["members"] = members
    if member is not None and not member.kicked:
        out["role"] = member.role
        if row.visibility == "private":
            out["invite_code"] = row.invite_code
    return out


async def _live(hub: Hub, campaign: str) -> ServerRecord | None:
    try:
        return await hub.registry.locate(campaign)
    except REDIS_DOWN:
        return None  # reading a campaign does not need Redis; its player count does


async def visible(hub: Hub, who: Principal, cid: str, invite: str | None = None) -> tuple[CampaignRow, Member | None]:
    """The campaign if `who` may see it: public, member, admin, or private with the right invite."""
    row = await hub.campaigns.get(v.campaign_id("campaign", cid))
    if row is None:
        refuse(404, "no such campaign")
    member = await hub.campaigns.member(row.campaign_id, who.account)
    if member is not None and member.kicked:
        refuse(403, "you were removed from this campaign")
    invited = invite is not None and row.invite_code is not None and secrets.compare_digest(invite, row.invite_code)
    if row.visibility == "private" and member is None and not who.is_admin and not invited:
        refuse(404, "no such campaign")
    return row, member


@routes.post("/v1/campaigns")
async def create(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    cfg = hub.cfg
    b = await body(request, {
        "title": v.text(1, 80), "game": _game(hub), "seed": v.integer(0, 2**53), "config": v.config_map(),
        "max_players": v.integer(cfg.min_players, cfg.max_players), "visibility": v.choice("public", "private"),
        "schedule": sched.check,
    }, ("title", "game"))  # fmt: skip
    now = await hub.accounts.now()
    schedule = b.get("schedule") or {"kind": "now"}
    status, starts, ends = sched.initial_status(schedule, now)
    visibility = b.get("visibility", "public")
    row = await hub.campaigns.create({
        "campaign_id": new_id("c"), "owner_id": who.account, "title": b["title"], "game": b["game"],
        "seed": b.get("seed", secrets.randbelow(2**31)), "config": b.get("config", {}),
        "max_players": b.get("max_players", cfg.max_players), "visibility": visibility,
        "invite_code": secrets.token_urlsafe(12) if visibility == "private" else None, "status": status,
        "schedule": schedule, "starts_at": starts, "ends_at": ends,
    })  # fmt: skip
    member = await hub.campaigns.member(row.campaign_id, who.account)
    return ok(view(row, members=1, member=member), 201)


@routes.get("/v1/campaigns")
async def discover(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal(request)
    q = params(request, {
        "game": v.pattern(v.GAME_RE, "a game id"), "status": v.choice(*STATUSES), "q": v.text(1, 64),
        "free": v.query_bool, "limit": v.query_int(1, 100), "offset": v.query_int(0, 10_000),
    })  # fmt: skip
    limit = q.get("limit", 20)
    statuses = [q["status"]] if "status" in q else list(LIVE_STATUSES)
    fetch = limit * 3 if q.get("free") else limit  # free seats are known after the query: fetch more
    rows = await hub.campaigns.discover(game=q.get("game"), statuses=statuses, text=q.get("q"), limit=fetch,
                                        offset=q.get("offset", 0))  # fmt: skip
    out = []
    for row, members in rows:
        item = view(row, members=members, live=await _live(hub, row.campaign_id))
        if q.get("free") and item["free_seats"] <= 0:
            continue
        out.append(item)
    return ok({"campaigns": out[:limit]})


@routes.get("/v1/campaigns/mine")
async def mine(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    rows = await hub.campaigns.of_member(who.account)
    out = []
    for row in rows:
        member = await hub.campaigns.member(row.campaign_id, who.account)
        out.append(view(row, live=await _live(hub, row.campaign_id), member=member))
    return ok({"campaigns": out})


@routes.get("/v1/campaigns/{cid}")
async def details(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"invite": _INVITE})
    who = principal(request)
    row, member = await visible(hub, who, request.match_info["cid"], q.get("invite"))
    members = len(await hub.campaigns.member_ids(row.campaign_id))
    return ok(view(row, members=members, live=await _live(hub, row.campaign_id), member=member))


@routes.post("/v1/campaigns/{cid}/join")
async def join(request: web.Request) -> web.Response:
    """Membership (with the invite for a private campaign), then a seat: `{url, token}` or a waitlist place."""
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, {"invite": _INVITE})
    row, member = await visible(hub, who, request.match_info["cid"], b.get("invite"))
    ban = await hub.social.active_ban(who.account, row.campaign_id)
    if ban is not None:
        hub.metrics.joins.labels("banned").inc()
        refuse(403, "this account is banned" + (" from this campaign" if ban.campaign else ""))
    if row.status == "scheduled":
        refuse(409, "the campaign has not opened yet", code="not_open")
    if row.status in ("completed", "archived"):
        refuse(409, f"the campaign is {row.status}", code="ended")
    if member is None and not await hub.campaigns.add_member(row.campaign_id, who.account):
        refuse(403, "you were removed from this campaign")
    account = await hub.accounts.get(who.account)
    name = (account.display_name or account.handle or who.account) if account else who.account
    result = await hub.placement.join(who, row, name[:32])
    if isinstance(result, Waiting):
        return ok({"campaign_id": row.campaign_id, "waitlist": {"position": result.position}}, 202)
    return ok({"campaign_id": row.campaign_id, "url": result.url, "token": result.token,
               "server": result.server, "expires_in": result.expires_in})  # fmt: skip


@routes.post("/v1/campaigns/{cid}/leave")
async def leave(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    await body(request, {})
    row, member = await visible(hub, who, request.match_info["cid"])
    if member is None:
        refuse(409, "you are not a member of this campaign")
    if member.role == "owner":
        refuse(409, "the owner cannot leave; complete the campaign instead")
    await hub.campaigns.leave(row.campaign_id, who.account)
    await hub.seats.leave(row.campaign_id, who.account)
    await hub.publish({"t": "social", "accounts": [who.account]})
    return web.Response(status=204)


@routes.get("/v1/campaigns/{cid}/members")
async def members(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    row, member = await visible(hub, who, request.match_info["cid"])
    if member is None and not who.is_admin:
        refuse(403, "members only")
    rows = await hub.campaigns.members(row.campaign_id)
    names = await hub.names([m.account_id for m in rows])
    return ok({"members": [{"account_id": m.account_id, "role": m.role, "joined_at": m.joined_at,
                            **names.get(m.account_id, {})} for m in rows]})  # fmt: skip


async def _owned(hub: Hub, request: web.Request) -> tuple[Principal, CampaignRow]:
    who = principal(request)
    row, member = await visible(hub, who, request.match_info["cid"])
    if (member is None or member.role != "owner") and not who.is_admin:
        refuse(403, "only the campaign's owner may do this")
    return who, row


@routes.delete("/v1/campaigns/{cid}/members/{account}")
async def kick(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who, row = await _owned(hub, request)
    target = v.account_id("account", request.match_info["account"])
    if not await hub.campaigns.kick(row.campaign_id, target):
        refuse(404, "no such member (the owner cannot be kicked)")
    await hub.seats.leave(row.campaign_id, target)
    await hub.placement.kick(row.campaign_id, target, f"removed from the campaign by {who.account}")
    await hub.publish({"t": "social", "accounts": [target]})
    return web.Response(status=204)


@routes.post("/v1/campaigns/{cid}/complete")
async def complete(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    _, row = await _owned(hub, request)
    await body(request, {})
    if not await hub.campaigns.set_status(row.campaign_id, LIVE_STATUSES, "completed"):
        refuse(409, f"the campaign is {row.status}")
    await hub.placement.stop(row.campaign_id, "the campaign is completed")
    return ok(view(await _reload(hub, row)))


@routes.post("/v1/campaigns/{cid}/archive")
async def archive(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    _, row = await _owned(hub, request)
    await body(request, {})
    if not await hub.campaigns.set_status(row.campaign_id, ("completed",), "archived"):
        refuse(409, "only a completed campaign can be archived")
    return ok(view(await _reload(hub, row)))


@routes.get("/v1/campaigns/{cid}/replay")
async def replay(request: web.Request) -> web.Response:
    """Where a campaign's journal is and the command that replays it (kept after archiving)."""
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    row, member = await visible(hub, who, request.match_info["cid"])
    if member is None and not who.is_admin:
        refuse(403, "members only")
    if row.data_at is None:
        refuse(404, "the campaign has never run, so there is nothing to replay")
    host, _, root = row.data_at.partition(":")
    return ok({"campaign_id": row.campaign_id, "status": row.status, "host": host, "data_dir": root,
               "command": f"arbiter replay {root}/{row.campaign_id} --verify"})  # fmt: skip


async def _reload(hub: Hub, row: CampaignRow) -> CampaignRow:
    fresh = await hub.campaigns.get(row.campaign_id)
    assert fresh is not None
    return fresh
