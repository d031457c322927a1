"""`/v1/leaderboards/global` and `/v1/campaigns/{id}/leaderboard`: top N and around me.

Scores are pushed by the game servers (engine/hub_link.py); the boards live in Redis and are rebuilt
from PostgreSQL when Redis lost them (hub/upkeep.py). A private campaign's board is for its members.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hub import validate as v
from hub.http import ok, params, principal
from hub.routes_campaigns import visible
from hub.state import HUB_KEY, Hub

routes = web.RouteTableDef()


async def _entries(hub: Hub, rows: list[tuple[int, str, int]]) -> list[dict[str, Any]]:
    names = await hub.names([a for _, a, _ in rows])
    return [{"rank": r, "account_id": a, **names.get(a, {}), "score": s} for r, a, s in rows]


async def _answer(hub: Hub, campaign: str | None, rows: list[tuple[int, str, int]], **extra: Any) -> web.Response:
    built = await hub.boards.built()
    if not built:
        hub.upkeep.rebuild_soon()
    return ok({"board": campaign or "global", "entries": await _entries(hub, rows), "complete": built, **extra})


@routes.get("/v1/leaderboards/global")
async def global_top(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"limit": v.query_int(1, 100)})
    principal(request)
    return await _answer(hub, None, await hub.boards.top(None, q.get("limit", 10)))


@routes.get("/v1/leaderboards/global/around-me")
async def global_around(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"n": v.query_int(0, 50)})
    who = principal(request)
    rank, rows = await hub.boards.around(None, who.account, q.get("n", 5))
    return await _answer(hub, None, rows, rank=rank)


@routes.get("/v1/campaigns/{cid}/leaderboard")
async def campaign_top(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"limit": v.query_int(1, 100)})
    row, _ = await visible(hub, principal(request), request.match_info["cid"])
    return await _answer(hub, row.campaign_id, await hub.boards.top(row.campaign_id, q.get("limit", 10)))


@routes.get("/v1/campaigns/{cid}/leaderboard/around-me")
async def campaign_around(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"n": v.query_int(0, 50)})
    who = principal(request)
    row, _ = await visible(hub, who, request.match_info["cid"])
    rank, rows = await hub.boards.around(row.campaign_id, who.account, q.get("n", 5))
    return await _answer(hub, row.campaign_id, rows, rank=rank)
