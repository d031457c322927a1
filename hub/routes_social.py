"""`/v1/friends...` and `/v1/blocks...`: requests, accept, decline, remove, block, unblock.

A blocked player can neither friend-request nor message the one who blocked it (nor the reverse);
blocking also ends the friendship. Presence is shown to friends only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub import validate as v
from hub.http import body, no_query, ok, principal, refuse
from hub.state import HUB_KEY, Hub
from persistence.pg_hub_social import ACCEPTED, ALREADY, BLOCKED
from persistence.redis_layout import REDIS_DOWN

routes = web.RouteTableDef()

_TARGET = {"account": v.account_id, "handle": v.handle}


async def target(hub: Hub, me: str, b: dict[str, Any]) -> str:
    """The other account, named by exactly one of `account` and `handle`."""
    if len(b) != 1:
        refuse(400, "name the player with exactly one of account and handle")
    if "account" in b:
        other = await hub.accounts.get(b["account"])
    else:
        other = await hub.accounts.by_handle(b["handle"])
    if other is None:
        refuse(404, "no such player")
    if other.account_id == me:
        refuse(400, "that is you")
    return other.account_id


def _path_account(request: web.Request) -> str:
    return v.account_id("account", request.match_info["account"])


@routes.get("/v1/friends")
async def friends(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    ids = await hub.social.friends(who.account)
    incoming, outgoing = await hub.social.requests(who.account)
    names = await hub.names([*ids, *incoming, *outgoing])
    try:
        states = await hub.presence.status(ids)
    except REDIS_DOWN:
        states = {}
    out = []
    for a in ids:
        st = states.get(a)
        out.append({"account_id": a, **names.get(a, {}), "status": st.status if st else None,
                    "campaign": st.campaign if st else None})  # fmt: skip
    return ok({
        "friends": out,
        "incoming": [{"account_id": a, **names.get(a, {})} for a in incoming],
        "outgoing": [{"account_id": a, **names.get(a, {})} for a in outgoing],
    })  # fmt: skip


@routes.post("/v1/friends/requests")
async def request_friend(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    other = await target(hub, who.account, await body(request, _TARGET))
    verdict = await hub.limits.social.hit(who.account)
    if not verdict.allowed:
        refuse(429, "too many friend requests; try later", retry_after=verdict.retry_after_s)
    outcome = await hub.social.request_friend(who.account, other)
    if outcome == BLOCKED:
        refuse(403, "you cannot send this player a friend request")
    if outcome == ALREADY:
        refuse(409, "already friends")
    await hub.publish({"t": "social", "accounts": [who.account, other]})
    if outcome == ACCEPTED:
        return ok({"status": "friends", "account_id": other})
    await hub.publish({"t": "notify", "account": other, "kind": "friend_request", "from": who.account})
    return ok({"status": "requested", "account_id": other}, 201)


@routes.post("/v1/friends/requests/{account}/accept")
async def accept(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    await body(request, {})
    other = _path_account(request)
    if not await hub.social.accept_friend(who.account, other):
        refuse(404, "no such friend request")
    await hub.publish({"t": "social", "accounts": [who.account, other]})
    await hub.publish({"t": "notify", "account": other, "kind": "friend_accepted", "from": who.account})
    return ok({"status": "friends", "account_id": other})


@routes.post("/v1/friends/requests/{account}/decline")
async def decline(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    await body(request, {})
    if not await hub.social.decline_friend(who.account, _path_account(request)):
        refuse(404, "no such friend request")
    return web.Response(status=204)


@routes.delete("/v1/friends/{account}")
async def unfriend(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    other = _path_account(request)
    if not await hub.social.remove_friend(who.account, other):
        refuse(404, "not a friend")
    await hub.publish({"t": "social", "accounts": [who.account, other]})
    return web.Response(status=204)


@routes.get("/v1/blocks")
async def blocks(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    ids = await hub.social.blocks(who.account)
    names = await hub.names(ids)
    return ok({"blocks": [{"account_id": a, **names.get(a, {})} for a in ids]})


@routes.post("/v1/blocks")
async def block(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    other = await target(hub, who.account, await body(request, _TARGET))
    await hub.social.block(who.account, other)
    await hub.publish({"t": "social", "accounts": [who.account, other]})
    return ok({"blocked": other}, 201)


@routes.delete("/v1/blocks/{account}")
async def unblock(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    if not await hub.social.unblock(who.account, _path_account(request)):
        refuse(404, "not blocked")
    return web.Response(status=204)
