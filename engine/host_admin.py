"""The admin API of `arbiter host`: campaigns started, stopped, hibernated and woken at runtime, and
the fair-play routes of each campaign under `/admin/campaigns/{campaign}/` (engine/security/admin.py).

    GET    /admin/campaigns                       every campaign: state, game, players, tick
    POST   /admin/campaigns                       {"campaign", "game", "seed"?, "config"?}: start it (or wake it)
    DELETE /admin/campaigns/{campaign}?reason=    stop it (sealed; players told to relocate)
    POST   /admin/campaigns/{campaign}/hibernate  seal and unload it now (409 while anyone is connected)
    POST   /admin/campaigns/{campaign}/wake       load it now

Like every admin route these need an admin-role bearer token whose audience is the host's name
(`arbiter token --role admin --campaign HOSTNAME`). `/admin/players` lists the players of every
loaded campaign and `/admin/players/{account}/kick` kicks an account wherever it plays; bans and
the audit log are per campaign. See docs/hosting.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from engine.security.admin import AdminBackend, ApiError, json_body, json_response
from engine.security.fairplay.server_hooks import AdminAdapter
from sim.spec import ConfigError

if TYPE_CHECKING:
    from engine.host import Host

_START_FIELDS: Final = frozenset({"campaign", "game", "seed", "config"})


class HostAdmin:
    """engine.security.admin.AdminBackend over every campaign of a host."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def for_campaign(self, campaign: str) -> AdminBackend | None:
        server = self.host.server(campaign)
        return AdminAdapter(server.fairplay) if server is not None else None

    def players(self) -> list[dict[str, Any]]:
        out = []
        for server in self.host.loaded():
            out += [{**p, "campaign": server.cfg.campaign} for p in server.fairplay.players()]
        return out

    def kick(self, account: str, reason: str, by: str) -> bool:
        kicked = False
        for server in self.host.loaded():
            kicked = server.fairplay.kick_by_admin(account, reason, by) or kicked
        return kicked

    def _per_campaign(self) -> ApiError:
        return ApiError(400, "bad_request", "bans and audit are per campaign on a host: use "
                        "/admin/campaigns/{campaign}/bans and /admin/campaigns/{campaign}/audit")  # fmt: skip

    async def ban(
        self, account: str | None, ip_range: str | None, reason: str, duration_s: float | None, by: str
    ) -> dict[str, Any]:
        raise self._per_campaign()

    async def unban(self, account: str | None, ip_range: str | None, by: str) -> int:
        raise self._per_campaign()

    async def bans(self, include_expired: bool) -> list[dict[str, Any]]:
        raise self._per_campaign()

    async def audit(self, limit: int, account: str | None) -> list[dict[str, Any]]:
        raise self._per_campaign()


def admin_backend(host: Host) -> HostAdmin:
    return HostAdmin(host)


def _campaign_row(host: Host, cid: str) -> dict[str, Any]:
    e = host.entries[cid]
    s = e.server
    row: dict[str, Any] = {"campaign": cid, "game": e.spec.game, "seed": e.spec.seed, "state": e.state,
                           "url": host.campaign_url(cid)}  # fmt: skip
    if s is not None:
        row.update(ccu=len(s.by_eid), max_players=s.campaign.game.max_players, tick=s.campaign.tick_count)
    return row


def host_routes(host: Host) -> Callable[[web.Application], None]:
    from engine.host import CampaignSpec, PlacementRefusedError

    async def list_campaigns(request: web.Request) -> web.Response:
        return json_response({"host": host.name, "capacity": host.capacity,
                              "campaigns": [_campaign_row(host, cid) for cid in sorted(host.entries)]})  # fmt: skip

    async def start(request: web.Request) -> web.Response:
        body = await json_body(request, _START_FIELDS)
        cid, game, seed, config = body.get("campaign"), body.get("game"), body.get("seed", 1), body.get("config", {})
        if not isinstance(cid, str) or not isinstance(game, str):
            raise ApiError(400, "bad_request", "campaign and game must be strings")
        if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(config, dict):
            raise ApiError(400, "bad_request", "seed must be an integer and config an object")
        t0 = time.perf_counter()
        try:
            await host.start_campaign(CampaignSpec(cid, game, seed, dict(config)))
        except ConfigError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        except PlacementRefusedError as exc:
            raise ApiError(409, "refused", str(exc)) from None
        row = _campaign_row(host, cid)
        row["took_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        return json_response(row, status=201)

    async def stop(request: web.Request) -> web.Response:
        cid = request.match_info["campaign"]
        reason = request.query.get("reason", "stopped by an operator")[:200]
        if not await host.stop_campaign(cid, reason):
            raise ApiError(404, "not_found", f"no campaign {cid[:64]!r} here")
        return json_response({"stopped": cid})

    async def hibernate(request: web.Request) -> web.Response:
        cid = request.match_info["campaign"]
        if cid not in host.entries:
            raise ApiError(404, "not_found", f"no campaign {cid[:64]!r} here")
        if not await host.hibernate(cid):
            raise ApiError(409, "busy", f"campaign {cid[:64]!r} is {host.entries[cid].state} or has players")
        return json_response(_campaign_row(host, cid))

    async def wake(request: web.Request) -> web.Response:
        cid = request.match_info["campaign"]
        t0 = time.perf_counter()
        try:
            await asyncio.shield(host.ensure_loaded(cid))
        except PlacementRefusedError as exc:
            raise ApiError(404 if cid not in host.entries else 409, "refused", str(exc)) from None
        row = _campaign_row(host, cid)
        row["took_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        return json_response(row)

    def add(app: web.Application) -> None:
        app.router.add_get("/admin/campaigns", list_campaigns)
        app.router.add_post("/admin/campaigns", start)
        app.router.add_delete("/admin/campaigns/{campaign}", stop)
        app.router.add_post("/admin/campaigns/{campaign}/hibernate", hibernate)
        app.router.add_post("/admin/campaigns/{campaign}/wake", wake)

    return add
