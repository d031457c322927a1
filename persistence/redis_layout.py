"""Where everything lives in Redis: one `RedisKeys` per prefix, and how to open a client.

Every key is under a configurable prefix (default `arbiter:`), so several deployments (or tests) share
one Redis without meeting. The layout (docs/hub.md, "Redis layout", is the reader's copy):

    {p}srv:{server}            STRING  JSON record of a game server or placement handler, TTL = heartbeat TTL
    {p}srv:index               ZSET    server id -> last heartbeat (ms); a member without a record is down
    {p}camp:{campaign}         STRING  id of the server running the campaign, TTL = heartbeat TTL
    {p}ctl:{server}            LIST    control requests to a server (start/stop a campaign, kick)
    {p}reply:{request}         LIST    the one answer to a control request, TTL 60 s
    {p}pres:hub:{account}      ZSET    the account's hub stream connections -> expiry (ms)
    {p}pres:game:{account}     STRING  JSON {campaign, server} while it plays, TTL = heartbeat TTL
    {p}lb:c:{campaign}         ZSET    a campaign's leaderboard: account -> score
    {p}lb:global               ZSET    the global leaderboard: account -> sum of its campaign scores
    {p}lb:built                STRING  set once the leaderboards are built; gone after a flush
    {p}wait:{campaign}         ZSET    the campaign's waitlist: account -> enqueue time (ms)
    {p}waitseen:{campaign}     HASH    account -> when it last asked (ms); a waiter silent too long leaves
    {p}resv:{campaign}         ZSET    seats handed out with a join token: account -> expiry (ms)
    {p}rl:{limit}:{subject}    STRING  a rate-limit counter, TTL = its window
    {p}lock:{name}             STRING  a short lock (SET NX PX)
    {p}bus                     PUBSUB  events between hub processes and servers (chat, presence, ...)

Subjects that are personal data (emails) are hashed before they become part of a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Iterable
from typing import Any, Final

import redis.asyncio as aioredis

DEFAULT_PREFIX: Final = "arbiter:"
# Delete KEYS[1] only while it still holds ARGV[1]: releasing a lock (or a claim) that may have
# expired and been taken by someone else since, in one atomic step.
DEL_IF_EQUAL: Final = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"Redis key prefix {prefix!r} must be 1..64 characters of A-Z a-z 0-9 _ . : -")
    return prefix


def subject_hash(value: str) -> str:
    """A stable, non-reversible key part for personal data (an email in a rate-limit key)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


class RedisKeys:
    """Key names under one prefix."""

    __slots__ = ("bus", "lb_built", "lb_global", "prefix", "srv_index")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_prefix(prefix)
        self.srv_index = f"{prefix}srv:index"
        self.lb_global = f"{prefix}lb:global"
        self.lb_built = f"{prefix}lb:built"
        self.bus = f"{prefix}bus"

    def server(self, server_id: str) -> str:
        return f"{self.prefix}srv:{server_id}"

    def campaign_server(self, campaign: str) -> str:
        return f"{self.prefix}camp:{campaign}"

    def control(self, server_id: str) -> str:
        return f"{self.prefix}ctl:{server_id}"

    def reply(self, request_id: str) -> str:
        return f"{self.prefix}reply:{request_id}"

    def presence_hub(self, account: str) -> str:
        return f"{self.prefix}pres:hub:{account}"

    def presence_game(self, account: str) -> str:
        return f"{self.prefix}pres:game:{account}"

    def leaderboard(self, campaign: str) -> str:
        return f"{self.prefix}lb:c:{campaign}"

    def waitlist(self, campaign: str) -> str:
        return f"{self.prefix}wait:{campaign}"

    def waitseen(self, campaign: str) -> str:
        return f"{self.prefix}waitseen:{campaign}"

    def reservations(self, campaign: str) -> str:
        return f"{self.prefix}resv:{campaign}"

    def rate(self, limit: str, subject: str) -> str:
        return f"{self.prefix}rl:{limit}:{subject}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"


def open_redis(url: str, *, timeout: float = 1.0, blocking: float = 0.0) -> aioredis.Redis:
    """A client that fails fast: a dead Redis costs `timeout` seconds, not a hang. `blocking` > 0 is
    for a client that runs BLPOP with that timeout (its socket must outwait the command)."""
    socket_timeout = timeout + blocking if blocking > 0 else timeout
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        health_check_interval=0,
    )


# What a call to a dead or restarting Redis raises (redis-py wraps most of these, not all).
REDIS_DOWN: Final = (aioredis.ConnectionError, aioredis.TimeoutError, OSError, ConnectionError, TimeoutError)


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` or until `stop` is set; True when it is set (the loop should end)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def finish(tasks: Iterable[asyncio.Task[Any]], stop: asyncio.Event, grace: float) -> None:
    """End loops that talk to Redis: set `stop` and let them return on their own, then cancel what is
    left, never waiting without bound.

    A loop must not be stopped by cancellation alone: redis-py reads under `asyncio.timeout`, and on
    Python 3.11 a cancellation that lands as such a timeout expires can come out as a TimeoutError,
    which a loop that survives Redis outages takes for one and carries on (measured: a hang at close).
    """
    pending = [t for t in tasks if not t.done()]
    stop.set()
    if pending:
        _, pending_set = await asyncio.wait(pending, timeout=grace)
        for task in pending_set:
            task.cancel()
        if pending_set:
            await asyncio.wait(pending_set, timeout=1.0)
