"""The event bus between hub processes and game servers: one Redis pub/sub channel, `{p}bus`.

Events are JSON objects with a type `t`:

    {"t": "chat", "channel", "id", "from", "handle", "text", "ts"}      a chat message (already in PostgreSQL)
    {"t": "presence", "account", "status", "campaign"}                 a presence change
    {"t": "notify", "account", "kind", ...}                            a notification for one account
    {"t": "revoke", "sessions": [...], "accounts": [...]}              sessions revoked (logout, password)
    {"t": "social", "accounts": [...]}                                 friends, blocks or memberships changed
    {"t": "seat", "campaign"}                                          a seat of a full campaign came free

Pub/sub delivers at most once: an event published while a subscriber is disconnected is lost to it.
So nothing durable travels only on the bus: chat is in PostgreSQL before it is published, and a
subscriber that reconnects calls its `on_connected` hook to resynchronise (reload what it shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio as aioredis

from persistence.redis_layout import REDIS_DOWN, RedisKeys, pause

log = logging.getLogger(__name__)

RETRY_MIN_S: Final = 0.1
RETRY_MAX_S: Final = 2.0


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class Bus:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.channel = keys.bus
        self.connected = False
        self.reconnects = 0

    async def publish(self, event: dict[str, Any]) -> int:
        """Publish one event; returns how many subscribers got it. Raises when Redis is down."""
        return int(await self.redis.publish(self.channel, encode(event)))

    async def listen(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_connected: Callable[[], Awaitable[None]] | None = None,
        *,
        stop: asyncio.Event,
        ready: asyncio.Event | None = None,
    ) -> None:
        """Deliver every event to `on_event` (synchronous, quick) until `stop` is set; reconnect with
        backoff when Redis goes away, then await `on_connected()` before delivering again."""
        delay = RETRY_MIN_S
        while not stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected = True
                delay = RETRY_MIN_S
                if on_connected is not None:
                    await on_connected()
                if ready is not None:
                    ready.set()
                while not stop.is_set():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if msg is None:
                        continue
                    data = msg.get("data")
                    try:
                        event = json.loads(data) if isinstance(data, str) else None
                    except ValueError:
                        event = None
                    if not isinstance(event, dict):
                        log.warning("unreadable bus event: %.200r", data)
                        continue
                    try:
                        on_event(event)
                    except Exception:  # one bad event must not stop the bus
                        log.exception("bus event %.80r failed", event.get("t"))
            except REDIS_DOWN as exc:
                if self.connected:
                    log.warning("event bus lost Redis (%s); reconnecting", type(exc).__name__)
                self.connected = False
                self.reconnects += 1
            finally:
                self.connected = False
                with contextlib.suppress(*REDIS_DOWN):
                    await pubsub.aclose()
            if await pause(stop, delay):
                return
            delay = min(RETRY_MAX_S, delay * 2)
