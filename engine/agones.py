"""Agones: the game server speaks the Agones SDK over its REST gateway when it runs under Agones.

Agones sets `AGONES_SDK_HTTP_PORT` in the game server's container; the sdk-server sidecar answers on
`http://localhost:$AGONES_SDK_HTTP_PORT`. Without the variable nothing here runs and the server
behaves exactly the same. With it (`AgonesLink`):

- Ready once the game port listens (retried: the sidecar may start after us);
- Health every 2 s, only while the tick loop is alive (its tick count moved since the last beat), so
  a stuck loop turns the GameServer Unhealthy after Agones' failure threshold;
- the `campaigns` List (high-density allocation): its capacity is how many campaigns this process
  may hold, each running campaign is one value;
- labels and annotations (game, campaign ids, public game port) for allocation selectors and tools;
- Shutdown once the drain is done; and a drain when Agones moves the GameServer to Shutdown.

`AgonesSDK` is the thin aiohttp client of the REST paths (Agones' "REST Game Server Client API" and
its swagger definitions: /ready, /health, /shutdown, /allocate, /reserve, /gameserver,
/watch/gameserver, /metadata/label, /metadata/annotation, /v1beta1/lists/{name}[:addValue|:removeValue]).
See docs/agones.md and deploy/agones/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp

if TYPE_CHECKING:
    from engine.server import GameServer

log = logging.getLogger("arbiter.agones")

ENV_PORT: Final = "AGONES_SDK_HTTP_PORT"
CAMPAIGNS_LIST: Final = "campaigns"
HEALTH_EVERY_S: Final = 2.0


class AgonesError(RuntimeError):
    def __init__(self, status: int, path: str, body: str) -> None:
        super().__init__(f"Agones SDK {path}: HTTP {status} {body[:200]}")
        self.status = status


class AgonesSDK:
    """The Agones SDK's REST gateway, one method per call. Raises AgonesError for an HTTP error and
    aiohttp's errors when the sidecar does not answer."""

    def __init__(self, port: int, host: str = "localhost", timeout: float = 5.0) -> None:
        self.base = f"http://{host}:{port}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self._http().request(method, self.base + path, json=body) as r:
            text = await r.text()
            if r.status >= 300:
                raise AgonesError(r.status, path, text)
            data = json.loads(text) if text.strip() else {}
            return data if isinstance(data, dict) else {}

    # lifecycle
    async def ready(self) -> None:
        await self._call("POST", "/ready", {})

    async def health(self) -> None:
        await self._call("POST", "/health", {})

    async def shutdown(self) -> None:
        await self._call("POST", "/shutdown", {})

    async def allocate(self) -> None:
        await self._call("POST", "/allocate", {})

    async def reserve(self, seconds: int) -> None:
        await self._call("POST", "/reserve", {"seconds": str(seconds)})

    # configuration
    async def gameserver(self) -> dict[str, Any]:
        return await self._call("GET", "/gameserver")

    async def watch(self, on_update: Callable[[dict[str, Any]], None]) -> None:
        """Stream GameServer updates (newline-delimited `{"result": GameServer}`) until the stream ends."""
        no_total = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total)
        async with self._http().get(self.base + "/watch/gameserver", timeout=no_total) as r:
            if r.status >= 300:
                raise AgonesError(r.status, "/watch/gameserver", await r.text())
            async for line in r.content:
                if line.strip():
                    msg = json.loads(line)
                    gs = msg.get("result", msg) if isinstance(msg, dict) else None
                    if isinstance(gs, dict):
                        on_update(gs)

    # metadata (Agones prefixes the keys with "agones.dev/sdk-")
    async def set_label(self, key: str, value: str) -> None:
        await self._call("PUT", "/metadata/label", {"key": key, "value": value})

    async def set_annotation(self, key: str, value: str) -> None:
        await self._call("PUT", "/metadata/annotation", {"key": key, "value": value})

    # lists (beta: counts and lists)
    async def get_list(self, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1beta1/lists/{name}")

    async def set_list_capacity(self, name: str, capacity: int) -> dict[str, Any]:
        return await self._call("PATCH", f"/v1beta1/lists/{name}", {"capacity": str(capacity)})

    async def add_list_value(self, name: str, value: str) -> bool:
        """False when the value was there already (ALREADY_EXISTS)."""
        try:
            await self._call("POST", f"/v1beta1/lists/{name}:addValue", {"value": value})
        except AgonesError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def remove_list_value(self, name: str, value: str) -> bool:
        """False when the value was not there (NOT_FOUND)."""
        try:
            await self._call("POST", f"/v1beta1/lists/{name}:removeValue", {"value": value})
        except AgonesError as e:
            if e.status == 404:
                return False
            raise
        return True


class AgonesLink:
    """One process's presence in Agones. `liveness()` returns a number that moves while the tick loop
    runs (its tick count); `on_shutdown()` starts the drain when Agones asks for it."""

    def __init__(
        self,
        sdk: AgonesSDK,
        *,
        liveness: Callable[[], int],
        on_shutdown: Callable[[], None],
        capacity: int = 1,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        health_every_s: float = HEALTH_EVERY_S,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.sdk = sdk
        self._liveness = liveness
        self._on_shutdown = on_shutdown
        self.capacity = capacity
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.health_every_s = health_every_s
        self.ready_timeout_s = ready_timeout_s
        self.campaigns: set[str] = set()
        self.beats = 0
        self.missed_beats = 0
        self.state = ""  # the GameServer's state as the watch last saw it
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown_seen = False

    async def start(self, campaigns: list[str]) -> None:
        """Ready (after the metadata and the List are set), then health beats and the watch."""
        await self._retry("Ready", self._announce, campaigns)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._health(), name="agones-health"),
                       loop.create_task(self._watch(), name="agones-watch")]  # fmt: skip

    async def _announce(self, campaigns: list[str]) -> None:
        for k, v in self.labels.items():
            await self.sdk.set_label(k, v)
        for k, v in self.annotations.items():
            await self.sdk.set_annotation(k, v)
        await self.sdk.set_list_capacity(CAMPAIGNS_LIST, self.capacity)
        for cid in campaigns:
            await self.campaign_started(cid)
        await self.sdk.ready()
        log.info("Agones: Ready (%d of %d campaign slots used)", len(self.campaigns), self.capacity)

    async def _retry(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout_s
        delay = 0.1
        while True:
            try:
                await fn(*args)
                return
            except (aiohttp.ClientError, OSError, TimeoutError, AgonesError) as exc:
                if loop.time() + delay > deadline:
                    msg = f"Agones SDK sidecar did not take {what} within {self.ready_timeout_s} s: {exc}"
                    raise RuntimeError(msg) from exc
                log.info("Agones SDK not answering yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def campaign_started(self, campaign_id: str) -> None:
        await self.sdk.add_list_value(CAMPAIGNS_LIST, campaign_id)
        self.campaigns.add(campaign_id)

    async def campaign_stopped(self, campaign_id: str) -> None:
        self.campaigns.discard(campaign_id)
        await self.sdk.remove_list_value(CAMPAIGNS_LIST, campaign_id)

    async def _health(self) -> None:
        last = self._liveness()
        while True:
            await asyncio.sleep(self.health_every_s)
            now = self._liveness()
            if now == last:
                # The tick loop is stuck: say nothing, and let Agones' failure threshold decide.
                self.missed_beats += 1
                log.warning("Agones: no tick for %.1f s, health withheld", self.health_every_s)
                continue
            last = now
            try:
                await self.sdk.health()
                self.beats += 1
            except (aiohttp.ClientError, OSError, TimeoutError, AgonesError) as exc:
                log.warning("Agones health ping failed: %s", exc)

    async def _watch(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.sdk.watch(self._on_update)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, AgonesError, ValueError) as exc:
                log.debug("Agones watch ended (%s); watching again", exc)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)

    def _on_update(self, gs: dict[str, Any]) -> None:
        status = gs.get("status") or {}
        self.state = str(status.get("state", ""))
        if self.state == "Shutdown" and not self._shutdown_seen:
            self._shutdown_seen = True
            log.warning("Agones moved this GameServer to Shutdown: draining")
            self._on_shutdown()

    async def stop(self) -> None:
        """After the drain: free the List slots, tell Agones to shut the GameServer down, stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, AgonesError):
            for cid in list(self.campaigns):
                await self.campaign_stopped(cid)
            await self.sdk.shutdown()
            log.info("Agones: Shutdown sent")
        await self.sdk.close()


def agones_port_from_env() -> int | None:
    """The SDK gateway's port when running under Agones, else None. ValueError for a bad value."""
    raw = os.environ.get(ENV_PORT, "").strip()
    if not raw:
        return None
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError(f"{ENV_PORT}={raw!r} is not a port")
    return port


async def link_server(server: GameServer) -> AgonesLink | None:
    """Under Agones (AGONES_SDK_HTTP_PORT set): announce this one-campaign server and return its link."""
    port = agones_port_from_env()
    if port is None:
        return None
    cfg = server.cfg
    link = AgonesLink(
        AgonesSDK(port),
        liveness=lambda: server.stats.ticks,
        on_shutdown=server.request_stop,
        capacity=1,
        labels={"game": cfg.game},
        annotations={"campaigns": cfg.campaign, "game-port": str(server.port)},
    )
    await link.start([cfg.campaign])
    return link
