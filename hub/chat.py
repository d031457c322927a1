"""Chat: one channel per campaign (`c:<campaign>`) and direct messages (`dm:<a>:<b>`, a < b).

Posting (`POST /v1/campaigns/{id}/chat`, `POST /v1/dm/{who}`), in this order:
1. the text is cleaned (control and format characters stripped) and must fit `chat_max_len`;
2. the sender may post there: a member of the campaign, or not blocked by / blocking the other;
3. not banned (the game servers' fair-play bans count: `bans`, everywhere or in that campaign)
   and not muted;
4. within the per-sender rate limit (Redis; if Redis is down the post is refused with a 503);
5. stored in PostgreSQL — the 201 that follows is the acknowledgement: an acknowledged message
   is in the history whatever happens to Redis afterwards;
6. published on the bus, from which every hub process delivers it to its streams.
History: `GET` on the same paths, the last N (at most 100) before an optional message id.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub import validate as v
from hub.http import body, dumps, no_query, ok, params, principal, refuse
from hub.routes_campaigns import visible
from hub.sessions import Principal
from hub.state import HUB_KEY, Hub
from persistence.pg_hub_social import ChatMessage

routes = web.RouteTableDef()


def dm_channel(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"dm:{lo}:{hi}"


async def with_names(hub: Hub, messages: list[ChatMessage]) -> list[dict[str, Any]]:
    names = await hub.names([m.sender_id for m in messages])
    return [{**m.to_json(), "handle": names.get(m.sender_id, {}).get("handle")} for m in messages]


async def history_frame(hub: Hub, channel: str, limit: int) -> str:
    messages = await with_names(hub, await hub.social.history(channel, limit))
    return dumps({"t": "history", "channel": channel, "messages": messages})


async def _campaign_channel(hub: Hub, who: Principal, cid: str) -> tuple[str, str]:
    row, member = await visible(hub, who, cid)
    if member is None:
        refuse(403, "members only")
    return f"c:{row.campaign_id}", row.campaign_id


async def _dm_channel(hub: Hub, who: Principal, target: str) -> tuple[str, str]:
    # An account id, or a handle (which may look like one: "a_player12" is both shapes).
    other = await hub.accounts.get(target) if v.ID_RE.fullmatch(target) else None
    if other is None:
        other = await hub.accounts.by_handle(v.handle("who", target))
    if other is None:
        refuse(404, "no such player")
    if other.account_id == who.account:
        refuse(400, "you cannot message yourself")
    return dm_channel(who.account, other.account_id), other.account_id


async def post(hub: Hub, who: Principal, channel: str, campaign: str | None, b: dict[str, Any]) -> dict[str, Any]:
    text = v.chat_text(b["text"], hub.cfg.chat_max_len)
    if "client_msg_id" in b:  # a retry of a stored message: the same answer, not a second message
        old = await hub.social.by_client_msg_id(who.account, b["client_msg_id"])
        if old is not None:
            if old.channel != channel:
                refuse(409, "client_msg_id already used for another channel")
            names = await hub.names([who.account])
            return {**old.to_json(), "handle": names[who.account]["handle"], "duplicate": True}
    ban = await hub.social.active_ban(who.account, campaign)
    if ban is not None:
        refuse(403, "this account is banned and cannot chat")
    if await hub.social.muted(who.account):
        refuse(403, "this account is muted")
    verdict = await hub.limits.chat.hit(who.account)
    if not verdict.allowed:
        refuse(429, "slow down: too many messages", retry_after=verdict.retry_after_s)
    message, new = await hub.social.post(channel, who.account, text, b.get("client_msg_id"))
    handle = (await hub.names([who.account])).get(who.account, {}).get("handle")
    event = {"t": "chat", **message.to_json(), "handle": handle}
    if new:
        hub.metrics.chat_posts.inc()
        await hub.publish(event)  # stored already: a bus outage delays delivery, it loses nothing
    return {**message.to_json(), "handle": handle, "duplicate": not new}


_POST = {"text": lambda n, x: x, "client_msg_id": v.pattern(v.MSG_ID_RE, "1..64 characters of A-Z a-z 0-9 _ -")}
_HISTORY = {"limit": v.query_int(1, 100), "before": v.query_int(1, 2**62)}


@routes.post("/v1/campaigns/{cid}/chat")
async def campaign_post(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, _POST, ("text",))
    channel, campaign = await _campaign_channel(hub, who, request.match_info["cid"])
    return ok(await post(hub, who, channel, campaign, b), 201)


@routes.get("/v1/campaigns/{cid}/chat")
async def campaign_history(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, _HISTORY)
    who = principal(request)
    channel, _ = await _campaign_channel(hub, who, request.match_info["cid"])
    return await _history(hub, channel, q)


@routes.post("/v1/dm/{who}")
async def dm_post(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, _POST, ("text",))
    channel, other = await _dm_channel(hub, who, request.match_info["who"])
    if await hub.social.blocked_either(who.account, other):
        refuse(403, "you cannot message this player")
    return ok(await post(hub, who, channel, None, b), 201)


@routes.get("/v1/dm/{who}")
async def dm_history(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, _HISTORY)
    who = principal(request)
    channel, _ = await _dm_channel(hub, who, request.match_info["who"])
    return await _history(hub, channel, q)


async def _history(hub: Hub, channel: str, q: dict[str, Any]) -> web.Response:
    messages = await hub.social.history(channel, q.get("limit", hub.cfg.chat_history), q.get("before"))
    return ok({"channel": channel, "messages": await with_names(hub, messages)})
