"""The server registry and the placement protocol, in Redis.

**Registry.** Every game server (`arbiter serve --hub-redis`), host (`arbiter host`, issue #12) and
placement handler (the hub's `--spawn-local` spawner) publishes a `ServerRecord` every heartbeat,
with a TTL of a few heartbeats: `{p}srv:{id}` holds the record, `{p}srv:index` remembers every id it
has seen (score: last heartbeat, ms), and `{p}camp:{campaign}` names the server running a campaign.
A server whose record expired is *down*; its campaigns' `camp:` keys expire with it.

**Placement and control.** The hub sends a `ControlRequest` to one server by RPUSH onto
`{p}ctl:{server}`; the server BLPOPs its list, runs the request through its `ControlHandler` and
LPUSHes one JSON answer onto `{p}reply:{request}`, which the hub BLPOPs with a deadline. Requests
carry their deadline, and a server skips one whose deadline has passed (the hub gave up on it).

    start {campaign spec}  -> {"ok": true, "url": "ws://...", "server": id} | {"ok": false, "error": "..."}
    stop  {campaign, reason}            -> {"ok": bool}
    kick  {campaign, account, reason}   -> {"ok": bool}

`serve_control` is the loop a server or host runs; `ControlHandler` is what it implements. For one
campaign per process (`arbiter serve`) only `start` of its own campaign succeeds; a host (#12)
starts any campaign it has capacity for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

import redis.asyncio as aioredis

from persistence.redis_layout import DEL_IF_EQUAL, REDIS_DOWN, RedisKeys, pause

log = logging.getLogger(__name__)

REPLY_TTL_S: Final = 60
CONTROL_TTL_S: Final = 120  # a dead server's queue does not grow forever
DOWN_FORGET_S: Final = 86400.0  # a server down this long leaves the index

ConfigValue = int | float | str | bool

# Delete a key only if it still names this server (another server may have taken the campaign).

@dataclass(slots=True)
class CampaignLoad:
    """One campaign a server runs: its players now (`accounts`, at most its max)."""

    ccu: int = 0
    max_players: int = 0
    game: str = ""
    accounts: list[str] = field(default_factory=list)
    # "starting" while a handler brings it up; "hibernated": a host unloaded it (it takes no slot, and
    # its players still go there: their hello wakes it)
    state: str = "running"


@dataclass(slots=True)
class ServerRecord:
    id: str
    url: str  # where players connect ("" for a handler that only starts other servers)
    kind: str  # "serve" | "host" | "spawner"
    accepts: bool  # takes `start` requests for campaigns it does not run yet
    capacity: int  # campaigns it can run at once
    data: str  # id of the disk its campaigns' data lives on: a campaign restarts where its data is
    health: str = "ok"  # "ok" | "stopping"
    campaigns: dict[str, CampaignLoad] = field(default_factory=dict)
    games: list[str] = field(default_factory=list)  # [] = not said
    ts: float = 0.0  # wall clock of the heartbeat

    @property
    def ccu(self) -> int:
        return sum(c.ccu for c in self.campaigns.values())

    @property
    def free(self) -> int:
        return self.capacity - sum(1 for c in self.campaigns.values() if c.state != "hibernated")

    def to_json(self) -> str:
        d = asdict(self)
        d["ccu"] = self.ccu
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServerRecord:
        d = json.loads(text)
        camps = {str(k): CampaignLoad(**v) for k, v in dict(d.get("campaigns") or {}).items()}
        return cls(
            id=str(d["id"]), url=str(d.get("url", "")), kind=str(d.get("kind", "serve")),
            accepts=bool(d.get("accepts", False)), capacity=int(d.get("capacity", 1)), data=str(d.get("data", "")),
            health=str(d.get("health", "ok")), campaigns=camps, games=[str(g) for g in d.get("games") or []],
            ts=float(d.get("ts", 0.0)),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ServerStatus:
    id: str
    up: bool
    last_seen: float  # wall clock of its last heartbeat
    record: ServerRecord | None  # None when down


class Registry:
    """Publish and read server records."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._del_if_equal = redis.register_script(DEL_IF_EQUAL)

    async def publish(self, record: ServerRecord, ttl_s: float) -> None:
        """One heartbeat: the record, the index and the campaign locations, all with the TTL."""
        k = self.keys
        record.ts = time.time()
        px = max(1, int(ttl_s * 1000))
        async with self.redis.pipeline(transaction=False) as p:
            p.set(k.server(record.id), record.to_json(), px=px)
            p.zadd(k.srv_index, {record.id: int(record.ts * 1000)})
            for cid, load in record.campaigns.items():
                if load.state in ("running", "hibernated") and record.url:
                    p.set(k.campaign_server(cid), record.id, px=px)
            await p.execute()

    async def withdraw(self, record: ServerRecord) -> None:
        """A clean stop: the record and the campaigns it still names go at once, not at TTL expiry."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as p:
            p.delete(k.server(record.id))
            for cid in record.campaigns:
                await self._del_if_equal(keys=[k.campaign_server(cid)], args=[record.id], client=p)
            await p.execute()

    async def release(self, server_id: str, campaigns: Iterable[str]) -> None:
        """Campaigns a live server no longer runs (a host hibernated or stopped them): their location
        goes at once, not at TTL expiry, so the hub places them again (on the same host, which wakes them)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as p:
            for cid in campaigns:
                await self._del_if_equal(keys=[k.campaign_server(cid)], args=[server_id], client=p)
            await p.execute()

    async def servers(self, *, include_down: bool = True) -> list[ServerStatus]:
        k = self.keys
        entries: list[Any] = await self.redis.zrange(k.srv_index, 0, -1, withscores=True)
        if not entries:
            return []
        ids = [str(m) for m, _ in entries]
        raw = await self.redis.mget([k.server(i) for i in ids])
        now = time.time()
        out: list[ServerStatus] = []
        forget: list[str] = []
        for (sid, score), text in zip(entries, raw, strict=True):
            last = float(score) / 1000.0
            record = _parse(text)
            if record is None and now - last > DOWN_FORGET_S:
                forget.append(str(sid))
                continue
            if record is not None or include_down:
                out.append(ServerStatus(str(sid), record is not None, last, record))
        if forget:
            await self.redis.zrem(k.srv_index, *forget)
        return out

    async def server(self, server_id: str) -> ServerRecord | None:
        return _parse(await self.redis.get(self.keys.server(server_id)))

    async def locate(self, campaign: str) -> ServerRecord | None:
        """The live server running `campaign`, or None."""
        sid = await self.redis.get(self.keys.campaign_server(campaign))
        if not sid:
            return None
        record = await self.server(str(sid))
        if record is None or campaign not in record.campaigns:
            return None
        return record


def _parse(text: object) -> ServerRecord | None:
    if not isinstance(text, str):
        return None
    try:
        return ServerRecord.from_json(text)
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable server record in Redis: %.200r", text)
        return None


# -- control: the placement protocol ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CampaignSpec:
    campaign: str
    game: str
    seed: int
    max_players: int
    config: Mapping[str, ConfigValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ControlRequest:
    op: str  # "start" | "stop" | "kick"
    id: str
    deadline: float  # wall clock; after it nobody waits for the answer
    campaign: str
    spec: CampaignSpec | None = None  # for "start"
    account: str = ""  # for "kick"
    reason: str = ""

    def to_json(self) -> str:
        d: dict[str, Any] = {"op": self.op, "id": self.id, "deadline": self.deadline, "campaign": self.campaign,
                             "account": self.account, "reason": self.reason}  # fmt: skip
        if self.spec is not None:
            d["spec"] = asdict(self.spec)
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ControlRequest:
        d = json.loads(text)
        spec = d.get("spec")
        return cls(
            op=str(d["op"]), id=str(d["id"]), deadline=float(d["deadline"]), campaign=str(d["campaign"]),
            spec=CampaignSpec(**spec) if isinstance(spec, dict) else None, account=str(d.get("account", "")),
            reason=str(d.get("reason", "")),
        )  # fmt: skip


class PlacementError(Exception):
    """A handler cannot start a campaign; the message goes back to the hub."""


class ControlHandler(Protocol):
    """What a server, host or spawner does with control requests (methods run on its event loop)."""

    async def start_campaign(self, spec: CampaignSpec) -> tuple[str, str]:
        """Start the campaign (or find it running): (the URL players connect to, the id of the server
        that runs it). Raise PlacementError when this handler cannot."""
        ...

    async def stop_campaign(self, campaign: str, reason: str) -> bool: ...

    async def kick(self, campaign: str, account: str, reason: str) -> bool: ...


async def send_control(
    redis: aioredis.Redis, blocking: aioredis.Redis, keys: RedisKeys, server_id: str, req: ControlRequest
) -> dict[str, Any] | None:
    """Queue `req` for `server_id` and wait for its answer until `req.deadline` (None on time-out).
    `blocking` is a client whose socket timeout outlasts the wait."""
    qkey = keys.control(server_id)
    async with redis.pipeline(transaction=False) as p:
        p.rpush(qkey, req.to_json())
        p.expire(qkey, CONTROL_TTL_S)
        await p.execute()
    wait = req.deadline - time.time()
    if wait <= 0:
        return None
    got = await blocking.blpop([keys.reply(req.id)], timeout=max(0.01, wait))
    if not got:
        return None
    answer = json.loads(str(got[1]))
    return answer if isinstance(answer, dict) else None


def post_control(redis: aioredis.Redis, keys: RedisKeys, server_id: str, req: ControlRequest) -> Any:
    """Queue `req` without waiting for the answer (stop, kick): an awaitable."""
    return redis.rpush(keys.control(server_id), req.to_json())


def new_request(op: str, campaign: str, timeout_s: float, **kw: Any) -> ControlRequest:
    return ControlRequest(op=op, id=secrets.token_hex(12), deadline=time.time() + timeout_s, campaign=campaign, **kw)


async def serve_control(
    redis: aioredis.Redis,
    blocking: aioredis.Redis,
    keys: RedisKeys,
    server_id: str,
    handler: ControlHandler,
    stop: asyncio.Event,
    *,
    poll_s: float = 0.5,
    retry_s: float = 1.0,
) -> None:
    """Answer control requests for `server_id` until `stop` is set (persistence/redis_layout.finish).
    Survives Redis outages (retries)."""
    qkey = keys.control(server_id)
    while not stop.is_set():
        try:
            got = await blocking.blpop([qkey], timeout=poll_s)
        except REDIS_DOWN as exc:
            log.debug("control queue %s: Redis unavailable (%s)", server_id, exc)
            await pause(stop, retry_s)
            continue
        if not got:
            continue
        try:
            req = ControlRequest.from_json(str(got[1]))
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable control request for %s: %.200r", server_id, got[1])
            continue
        if req.deadline < time.time():
            log.info("control request %s (%s %s) arrived after its deadline; skipped", req.id, req.op, req.campaign)
            continue
        answer = await _run(handler, req)
        with contextlib.suppress(*REDIS_DOWN):
            async with redis.pipeline(transaction=False) as p:
                p.lpush(keys.reply(req.id), json.dumps(answer, separators=(",", ":")))
                p.expire(keys.reply(req.id), REPLY_TTL_S)
                await p.execute()


async def _run(handler: ControlHandler, req: ControlRequest) -> dict[str, Any]:
    try:
        if req.op == "start":
            if req.spec is None:
                raise PlacementError("start without a campaign spec")
            timeout = max(0.1, req.deadline - time.time())
            url, server = await asyncio.wait_for(handler.start_campaign(req.spec), timeout)
            return {"ok": True, "url": url, "server": server}
        if req.op == "stop":
            return {"ok": await handler.stop_campaign(req.campaign, req.reason)}
        if req.op == "kick":
            return {"ok": await handler.kick(req.campaign, req.account, req.reason)}
        return {"ok": False, "error": f"unknown op {req.op[:16]!r}"}
    except PlacementError as exc:
        return {"ok": False, "error": str(exc)}
    except TimeoutError:
        return {"ok": False, "error": "the campaign did not start in time"}
    except Exception as exc:  # a handler bug must not kill the control loop
        log.exception("control request %s (%s) failed", req.id, req.op)
        return {"ok": False, "error": f"internal error: {type(exc).__name__}"}
