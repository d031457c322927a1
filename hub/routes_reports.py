"""Player reports, and the admin queue where they meet the fair-play decisions and the audit log.

`POST /v1/reports`: a player reports another with a reason, optional details and evidence — a chat
message it could read, or a campaign it belongs to and a tick (or tick range). The report is stored
(`reports`) and written to the shared audit log (`audit_log`, action `report`) with the
`arbiter replay` command that reproduces the ticks, so the game servers' admin API (`GET /audit`)
lists it next to their own decisions.

Admin accounts (role `admin`; `arbiter hub --grant-admin HANDLE`):
    GET  /v1/admin/reports?status=open   reports with the target's recent fair-play decisions and bans
    POST /v1/admin/reports/{id}          resolve: dismiss, mute (duration_s) or ban (duration_s, campaign)
    GET  /v1/admin/audit                 the audit log (game servers' decisions, reports, resolutions)
    GET  /v1/admin/servers               the registry: every server and handler, up or down
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from aiohttp import web

from hub import validate as v
from hub.http import admin, body, no_query, ok, params, principal, refuse
from hub.routes_social import target
from hub.state import HUB_KEY, Hub
from persistence.fairplay_records import AuditEntry

routes = web.RouteTableDef()

REASONS = ("cheating", "harassment", "spam", "offensive_name", "other")
MAX_TICK = 2**40
MAX_TICK_SPAN = 60 * 60 * 60  # an hour of ticks at 60 Hz

_EVIDENCE = v.obj({
    "message_id": v.integer(1, 2**62), "campaign": v.campaign_id, "tick": v.integer(0, MAX_TICK),
    "from_tick": v.integer(0, MAX_TICK), "to_tick": v.integer(0, MAX_TICK),
})  # fmt: skip


def replay_command(campaign: str, data_at: str | None, first: int, last: int) -> str:
    root = data_at.partition(":")[2] if data_at else "DATA_DIR"
    return f"arbiter replay {root}/{campaign} --from-tick {first} --to-tick {last} --violations"


async def _evidence(hub: Hub, reporter: str, reported: str, ev: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Checked evidence (what the reporter could see) and the campaign it concerns."""
    out: dict[str, Any] = {}
    campaign: str | None = None
    if "message_id" in ev:
        msg = await hub.social.message(ev["message_id"])
        if msg is None or msg.sender_id != reported:
            refuse(400, "evidence.message_id is not a message of the reported player", field="evidence.message_id")
        channel = msg.channel
        if channel.startswith("dm:"):
            if reporter not in channel.split(":")[1:]:
                refuse(400, "evidence.message_id is not a message you received", field="evidence.message_id")
        else:
            member = await hub.campaigns.member(channel[2:], reporter)
            if member is None:
                refuse(400, "evidence.message_id is in a channel you are not in", field="evidence.message_id")
            campaign = channel[2:]
        out["message"] = {"id": msg.message_id, "channel": channel, "text": msg.body, "ts": msg.created_at}
    ticks = [k for k in ("tick", "from_tick", "to_tick") if k in ev]
    if ticks:
        if "campaign" not in ev:
            refuse(400, "tick evidence needs evidence.campaign", field="evidence.campaign")
        first = ev.get("tick", ev.get("from_tick"))
        last = ev.get("tick", ev.get("to_tick"))
        if first is None or last is None or ("tick" in ev and len(ticks) > 1):
            refuse(400, "give evidence.tick, or evidence.from_tick and evidence.to_tick", field="evidence")
        if not 0 <= last - first <= MAX_TICK_SPAN:
            refuse(400, f"the tick range must be 0..{MAX_TICK_SPAN} ticks long", field="evidence")
        out.update({"from_tick": first, "to_tick": last})
    if "campaign" in ev:
        row = await hub.campaigns.get(ev["campaign"])
        member = await hub.campaigns.member(ev["campaign"], reporter) if row else None
        if row is None or member is None:
            refuse(400, "evidence.campaign is not a campaign you play in", field="evidence.campaign")
        campaign = row.campaign_id
        out["campaign"] = campaign
        if "from_tick" in out:
            out["replay"] = replay_command(campaign, row.data_at, out["from_tick"], out["to_tick"])
    return out, campaign


@routes.post("/v1/reports")
async def report(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, {
        "account": v.account_id, "handle": v.handle, "reason": v.choice(*REASONS),
        "details": v.text(0, 1000, allow_newlines=True), "evidence": _EVIDENCE,
    }, ("reason",))  # fmt: skip
    reported = await target(hub, who.account, {k: b[k] for k in ("account", "handle") if k in b})
    evidence, campaign = await _evidence(hub, who.account, reported, b.get("evidence", {}))
    verdict = await hub.limits.social.hit(who.account)
    if not verdict.allowed:
        refuse(429, "too many reports; try later", retry_after=verdict.retry_after_s)
    report_id = await hub.social.add_report(who.account, reported, b["reason"], b.get("details", ""), evidence,
                                            campaign)  # fmt: skip
    hub.fairplay.append_audit(AuditEntry(
        event_id=f"report:{report_id}", ts=time.time(), campaign=campaign, account=reported, action="report",
        evidence={"report_id": report_id, "reporter": who.account, "reason": b["reason"], **evidence},
    ))  # fmt: skip
    return ok({"report_id": report_id, "status": "open"}, 201)


@routes.get("/v1/admin/reports")
async def reports(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"status": v.choice("open", "dismissed", "actioned"), "limit": v.query_int(1, 200)})
    admin(request)
    rows = await hub.social.reports(q.get("status", "open"), q.get("limit", 50))
    now = time.time()
    bans = await hub.fairplay.list_bans(now)
    for r in rows:
        decisions = await hub.fairplay.read_audit(limit=20, account=r["target_id"])
        r["fairplay"] = [e.to_json() for e in decisions if e.action != "report"]
        r["bans"] = [b.to_json() for b in bans if b.account == r["target_id"]]
    return ok({"reports": rows})


@routes.post("/v1/admin/reports/{rid}")
async def resolve(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = admin(request)
    rid = v.query_int(1, 2**62)("report", request.match_info["rid"])
    b = await body(request, {"action": v.choice("dismiss", "mute", "ban"), "duration_s": v.number(60, 10 * 365 * 86400),
                             "campaign_only": v.boolean, "note": v.text(0, 500)}, ("action",))  # fmt: skip
    status = "dismissed" if b["action"] == "dismiss" else "actioned"
    resolution = f"{b['action']}: {b.get('note', '')}".strip(": ")
    campaign_ban = b["action"] == "ban" and bool(b.get("campaign_only"))
    done = await hub.social.resolve_report(rid, status, who.account, resolution, in_campaign=campaign_ban)
    if done is None:
        # A campaign-only ban of a report made outside any campaign would ban everywhere: refused.
        refuse(404, "no such open report" + (" made in a campaign" if campaign_ban else ""))
    target_id, campaign = done["target_id"], done["campaign_id"]
    until = time.time() + b["duration_s"] if "duration_s" in b else None
    if b["action"] == "mute":
        await hub.accounts.set_muted(target_id, dt.datetime.fromtimestamp(until or time.time() + 86400, dt.UTC))
    elif b["action"] == "ban":
        ban = await hub.fairplay.add_ban(account=target_id, campaign=campaign if b.get("campaign_only") else None,
                                         reason=f"report {rid}: {b.get('note', '')}".strip(": "),
                                         created_by=who.account, until=until)  # fmt: skip
        for cid in (
            [ban.campaign] if ban.campaign else [c.campaign_id for c in await hub.campaigns.of_member(target_id)]
        ):
            await hub.placement.kick(cid, target_id, "banned")
    hub.fairplay.append_audit(AuditEntry(
        event_id=f"report:{rid}:resolved", ts=time.time(), campaign=campaign, account=target_id,
        action=f"report_{b['action']}", evidence={"report_id": rid, "by": who.account, "note": b.get("note", "")},
    ))  # fmt: skip
    return ok({"report_id": rid, "status": status})


@routes.get("/v1/admin/audit")
async def audit(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    q = params(request, {"account": v.pattern(v.re.compile(r"[A-Za-z0-9_.:@#-]{1,64}"), "an account id"),
                         "campaign": v.pattern(v.re.compile(r"[A-Za-z0-9_.:-]{1,64}"), "a campaign id"),
                         "limit": v.query_int(1, 1000)})  # fmt: skip
    admin(request)
    await hub.fairplay.flush(2.0)
    entries = await hub.fairplay.read_audit(limit=q.get("limit", 100), account=q.get("account"),
                                            campaign=q.get("campaign"))  # fmt: skip
    return ok({"audit": [e.to_json() for e in entries]})


@routes.get("/v1/admin/servers")
async def servers(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    admin(request)
    out = []
    for s in await hub.registry.servers():
        item: dict[str, Any] = {"id": s.id, "up": s.up, "last_seen": s.last_seen}
        if s.record is not None:
            r = s.record
            item.update({"url": r.url, "kind": r.kind, "accepts": r.accepts, "capacity": r.capacity,
                         "free": r.free, "ccu": r.ccu, "health": r.health, "data": r.data,
                         "campaigns": sorted(r.campaigns)})  # fmt: skip
        out.append(item)
    return ok({"servers": out})
