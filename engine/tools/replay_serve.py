"""`arbiter replay DIR --serve`: the replay viewer. The browser's /watch?replay=ID plays a recorded
campaign, re-simulated on demand by the headless replay (engine/recovery.py's `replay_records`).

Routes (besides web/'s files): `/replay/ID/meta` and `/replay/ID/frames?from=T&n=N&step=S`, both
msgpack. A frame is the protocol's raw snapshot map (`{"t": "s", "k": tick, "a": 0, "e": records}`),
so the browser decodes it with the SDK's own snapshot decoder. Seeking backwards restarts from the
newest world snapshot at or before the tick; forwards it replays on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import msgpack

from engine.campaign import Campaign, TickResult
from engine.recovery import (
    JournalScan,
    campaign_meta,
    open_for_replay,
    replay_records,
    resolve_store_path,
    restore_snapshot,
)
from engine.web_routes import BadRequestError, WebRoutes, check_target, error
from netcode.protocol import dtype_to_wire
from netcode.ws_server import DoorLimits, HttpAnswer, WsServerConnection, connection_factory
from persistence.campaign_store import CampaignStore
from persistence.journal_codec import JournalFormatError
from sim.spec import ConfigError

log = logging.getLogger("arbiter.replay_serve")

MAX_FRAMES: Final = 240  # frames per request
MAX_STEP: Final = 600  # ticks between frames
MSGPACK: Final = "application/msgpack"


class ReplayCursor:
    """One recorded campaign, positioned at some tick, stepped forward on demand."""

    def __init__(self, path: str | Path) -> None:
        data_dir, self.campaign_id = resolve_store_path(path)
        self.store = CampaignStore.open(data_dir, self.campaign_id)
        self.meta = campaign_meta(self.store)
        if not self.meta:
            self.store.close(2.0)
            raise ValueError(f"{path}: no campaign metadata")
        bounds = self.store.journal_bounds()
        snaps = self.store.snapshot_ticks()
        self.last_tick = max(bounds[1] if bounds else 0, max(snaps, default=0))
        try:
            self.campaign = self._fresh()  # a journal of another format or game: one clear error
        except (JournalFormatError, ConfigError):
            self.store.close(2.0)
            raise

    def _fresh(self) -> Campaign:
        return open_for_replay(self.store, self.meta, self.campaign_id)

    def close(self) -> None:
        self.store.close(2.0)

    def header(self) -> dict[str, Any]:
        game = self.campaign.game
        tick_rate = int(self.meta.get("tick_rate", 60))
        return {
            "t": "replay",
            "campaign": self.campaign_id,
            "game": self.meta["game"],
            "world": dict(game.welcome_constants()),
            "dtype": dtype_to_wire(game.record_dtype),
            "tick_rate": tick_rate,
            "first": 0,
            "last": self.last_tick,
            "step": max(1, tick_rate // 20),
        }

    def _seek(self, tick: int) -> None:
        """Bring the campaign to `tick` (from a snapshot when it must go back)."""
        if self.campaign.tick_count > tick:
            self.campaign = self._fresh()
            restore_snapshot(self.campaign, self.store, max_tick=tick)
        if self.campaign.tick_count < tick:
            self._run(tick, None)

    def _run(self, to_tick: int, on_tick: Any) -> None:
        c = self.campaign
        replay_records(c, JournalScan(self.store, c.tick_count, to_tick), verify=False, to_tick=to_tick,
                       on_tick=on_tick)  # fmt: skip

    def frames(self, start: int, n: int, step: int) -> dict[str, Any]:
        """Up to n frames from tick `start`, `step` ticks apart, and the players' names."""
        start = max(0, min(start, self.last_tick))
        self._seek(start)
        c = self.campaign
        frames = [{"t": "s", "k": c.tick_count, "a": 0, "e": c.replicate().tobytes()}]
        end = min(self.last_tick, start + (n - 1) * step)

        def on_tick(result: TickResult) -> None:
            if (result.tick - start) % step == 0:
                frames.append({"t": "s", "k": result.tick, "a": 0, "e": c.replicate().tobytes()})

        if end > c.tick_count:
            self._run(end, on_tick)
        players = [[eid, account] for account, eid in sorted(c.accounts.items())]
        return {"t": "frames", "frames": frames, "players": players}


class ReplayHandler:
    """A ConnectionHandler that only answers HTTP: web/'s files and the replay routes."""

    def __init__(self, cursor: ReplayCursor) -> None:
        self.cursor = cursor
        self.web = WebRoutes(lambda: {"game": cursor.meta["game"], "campaign": cursor.campaign_id, "hub": None,
                                      "tokens": False, "watch_public": True, "ws": None})  # fmt: skip

    def on_connect(self, conn: WsServerConnection) -> bool:
        return True

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        log.log(logging.ERROR if exc is not None else logging.DEBUG, "%s from %s", cause, conn.peer, exc_info=exc)

    def http_request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> HttpAnswer | None:
        prefix = f"/replay/{self.cursor.campaign_id}/"
        if not path.startswith("/replay/"):
            return self.web.answer(path)
        try:
            route, query = check_target(path)
        except BadRequestError as bad:
            return bad.answer
        if route == prefix + "meta":
            return 200, MSGPACK, msgpack.packb(self.cursor.header()), [("Cache-Control", "no-store")]
        if route != prefix + "frames":
            return error(404, "no such replay")
        q = parse_qs(query, max_num_fields=8)
        try:
            start = int(q.get("from", ["0"])[0])
            n = int(q.get("n", ["60"])[0])
            step = int(q.get("step", ["1"])[0])
        except ValueError:
            return error(400, "from, n and step must be integers")
        if start < 0 or not 1 <= n <= MAX_FRAMES or not 1 <= step <= MAX_STEP:
            return error(400, f"need from >= 0, 1 <= n <= {MAX_FRAMES}, 1 <= step <= {MAX_STEP}")
        body = msgpack.packb(self.cursor.frames(start, n, step))
        return 200, MSGPACK, body, [("Cache-Control", "no-store")]

    def on_open(self, conn: WsServerConnection) -> None:  # never upgraded: every path is answered
        conn.close(1000)

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None:
        pass

    def on_close(self, conn: WsServerConnection) -> None:
        pass


@dataclass
class ReplayServer:
    server: asyncio.Server
    cursor: ReplayCursor
    url: str  # the viewer's page

    def close(self) -> None:
        self.server.close()
        self.cursor.close()


async def start_replay_server(path: str | Path, host: str = "127.0.0.1", port: int = 0) -> ReplayServer:
    """Serve the replay viewer on host:port (0: a free port)."""
    cursor = ReplayCursor(path)
    try:
        loop = asyncio.get_running_loop()
        factory = connection_factory(ReplayHandler(cursor), DoorLimits(), loop.time)
        server = await loop.create_server(factory, host, port)
    except OSError:
        cursor.close()
        raise
    bound = server.sockets[0].getsockname()[1]
    return ReplayServer(server, cursor, f"http://{host}:{bound}/watch?replay={cursor.campaign_id}")


async def serve_replay(path: str, host: str, port: int) -> None:
    rs = await start_replay_server(path, host, port)
    print(f"replay viewer: {rs.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        rs.close()
