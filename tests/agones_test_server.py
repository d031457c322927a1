"""A TEST SERVER standing in for Agones' sdk-server sidecar, which cannot run here (it needs Kubernetes).

Written from Agones' REST reference ("REST Game Server Client API", site/content/en/docs/Guides/
Client SDKs/rest.md) and its swagger definitions (sdks/swagger/sdk.swagger.json, beta.swagger.json):
the same paths, methods and JSON bodies, int64 fields as strings as the gRPC gateway encodes them,
and gRPC codes as HTTP statuses (NOT_FOUND 404, ALREADY_EXISTS 409, OUT_OF_RANGE 400). It keeps a
GameServer object whose state moves as the real one does for these calls (Ready on /ready, Shutdown
on /shutdown) and records every call, so a test can check what the engine said and when.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

SDK_PREFIX = "agones.dev/sdk-"


class AgonesTestServer:
    def __init__(self, lists: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[float, str, str, Any]] = []  # (time, method, path, body)
        self.state = "Scheduled"
        self.labels: dict[str, str] = {}
        self.annotations: dict[str, str] = {}
        # Lists are declared in the GameServer spec; the SDK can only change their capacity and values.
        self.lists: dict[str, dict[str, Any]] = {n: {"capacity": c, "values": []} for n, c in (lists or {}).items()}
        self.health_at: list[float] = []
        self._watchers: list[asyncio.Queue[dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- the GameServer object ---------------------------------------------------------------------
    def gameserver(self) -> dict[str, Any]:
        return {
            "object_meta": {"name": "arbiter-test", "namespace": "default",
                            "labels": dict(self.labels), "annotations": dict(self.annotations)},
            "status": {
                "state": self.state, "address": "127.0.0.1", "ports": [{"name": "default", "port": 7777}],
                "lists": {n: {"capacity": str(v["capacity"]), "values": list(v["values"])}
                          for n, v in self.lists.items()},
            },
        }  # fmt: skip

    def set_state(self, state: str) -> None:
        """What Agones' controller would do (e.g. Shutdown when the Fleet scales down)."""
        self.state = state
        self._publish()

    def _publish(self) -> None:
        gs = self.gameserver()
        for q in self._watchers:
            q.put_nowait(gs)

    def paths(self) -> list[str]:
        return [p for _, _, p, _ in self.calls]

    # -- handlers ----------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.calls.append((time.monotonic(), request.method, request.path, body))
        return body

    async def ready(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.state = "Ready"
        self._publish()
        return web.json_response({})

    async def health(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.health_at.append(time.monotonic())
        return web.json_response({})

    async def shutdown(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.set_state("Shutdown")
        return web.json_response({})

    async def allocate(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.set_state("Allocated")
        return web.json_response({})

    async def get_gameserver(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(self.gameserver())

    async def watch(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._watchers.append(q)
        q.put_nowait(self.gameserver())
        try:
            while True:
                gs = await q.get()
                await resp.write((json.dumps({"result": gs}) + "\n").encode())
        finally:
            self._watchers.remove(q)

    async def label(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        self.labels[SDK_PREFIX + body["key"]] = body["value"]
        self._publish()
        return web.json_response({})

    async def annotation(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        self.annotations[SDK_PREFIX + body["key"]] = body["value"]
        self._publish()
        return web.json_response({})

    def _list(self, name: str) -> dict[str, Any]:
        if name not in self.lists:
            raise web.HTTPNotFound(text=json.dumps({"code": 5, "message": f"List {name} not found"}))
        return self.lists[name]

    def _list_json(self, name: str) -> web.Response:
        v = self.lists[name]
        return web.json_response({"name": name, "capacity": str(v["capacity"]), "values": list(v["values"])})

    async def list_get(self, request: web.Request) -> web.Response:
        await self._record(request)
        name = request.match_info["spec"]
        self._list(name)
        return self._list_json(name)

    async def list_patch(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        name = request.match_info["spec"]
        lst = self._list(name)
        if "capacity" in body:
            cap = int(body["capacity"])  # int64 travels as a JSON string
            if not 0 <= cap <= 1000:
                raise web.HTTPBadRequest(text=json.dumps({"code": 11, "message": "capacity out of range"}))
            lst["capacity"] = cap
            lst["values"] = lst["values"][:cap]
        if "values" in body:
            lst["values"] = list(body["values"])
        self._publish()
        return self._list_json(name)

    async def list_post(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        name, _, verb = request.match_info["spec"].partition(":")
        lst = self._list(name)
        value = body["value"]
        if verb == "addValue":
            if value in lst["values"]:
                raise web.HTTPConflict(text=json.dumps({"code": 6, "message": "already exists"}))
            if len(lst["values"]) >= lst["capacity"]:
                raise web.HTTPBadRequest(text=json.dumps({"code": 11, "message": "list at capacity"}))
            lst["values"].append(value)
        elif verb == "removeValue":
            if value not in lst["values"]:
                raise web.HTTPNotFound(text=json.dumps({"code": 5, "message": "not found"}))
            lst["values"].remove(value)
        else:
            raise web.HTTPNotFound()
        self._publish()
        return self._list_json(name)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> AgonesTestServer:
        app = web.Application()
        app.router.add_post("/ready", self.ready)
        app.router.add_post("/health", self.health)
        app.router.add_post("/shutdown", self.shutdown)
        app.router.add_post("/allocate", self.allocate)
        app.router.add_get("/gameserver", self.get_gameserver)
        app.router.add_get("/watch/gameserver", self.watch)
        app.router.add_put("/metadata/label", self.label)
        app.router.add_put("/metadata/annotation", self.annotation)
        app.router.add_get("/v1beta1/lists/{spec}", self.list_get)
        app.router.add_patch("/v1beta1/lists/{spec}", self.list_patch)
        app.router.add_post("/v1beta1/lists/{spec}", self.list_post)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
