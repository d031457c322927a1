"""One account, one ship, under attack: concurrent hellos of one account with PostgreSQL on, a
takeover, a reconnect (position and velocity kept), refusal mode, one account trying to fill the
campaign. Honest bots play throughout, in a process of their own, and must keep their 19+
snapshots a second; nothing is duplicated in the world, the ledger or the progress rows; the
server catches no bug."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import msgpack
import numpy as np
import pytest

from engine.security.auth import KeyRing, TokenIssuer, TokenVerifier
from engine.server import GameServer
from netcode.client_session import ClientSession
from netcode.protocol import CloseCode, ErrorCode, encode_hello
from netcode.ws_client import WsClientConnection, ws_connect
from persistence.pg_rows import Progress
from persistence.pg_writer import PgWriteBehind
from sim.entities import SLOT_MASK
from sim.games.startales.constants import LEDGER_IMPORTED
from tests.botutil import honest_bots as bot_process
from tests.pgutil import dsn as pg_dsn
from tests.serverutil import running_server, url, wait_for

BOTS = 3


class Peer:
    """A raw WebSocket client that records what the server says."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.conn: WsClientConnection | None = None

    async def open(self, server: GameServer) -> Peer:
        self.conn = await ws_connect(url(server), lambda m: self.frames.append(msgpack.unpackb(m)))
        return self

    def hello(self, name: str, token: str = "") -> None:
        assert self.conn is not None
        self.conn.send(encode_hello(name, token))

    @property
    def welcome(self) -> dict[str, Any] | None:
        return next((f for f in self.frames if f.get("t") == "welcome"), None)

    @property
    def close_code(self) -> int | None:
        assert self.conn is not None
        return self.conn.closed.result()[0] if self.conn.closed.done() else None


def honest_bots(
    server: GameServer, game: str, env: dict[str, str] | None = None, campaign: str = "default", seconds: float = 8.0
) -> AbstractAsyncContextManager[list[dict[str, Any]]]:
    async def joined() -> bool:
        return sum(1 for c in server.clients.values() if c.name.startswith("bot") and c.eid >= 0) == BOTS

    return bot_process(url(server), game, BOTS, joined, seconds=seconds, campaign=campaign, env=env)


def ships(server: GameServer) -> int:
    a = server.campaign.world.arrays
    return int(np.count_nonzero(a["alive"].astype(bool) & a["is_player"].astype(bool)))


def ship_state(server: GameServer, eid: int) -> tuple[float, float, float, float]:
    a = server.campaign.world.arrays
    s = eid & SLOT_MASK
    return float(a["x"][s]), float(a["y"][s]), float(a["vx"][s]), float(a["vy"][s])


async def seed_progress(dsn: str, account: str, campaign: str, **kw: Any) -> None:
    pg = PgWriteBehind(dsn)
    await pg.start()
    pg.upsert_progress(Progress(account_id=account, campaign_id=campaign, tick=1, **kw))
    assert await pg.flush(10)
    assert await pg.stop(5)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def test_concurrent_hellos_of_one_account_make_one_ship_restored_once(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn, camp = pg_dsn(pg_database), f"door-{secrets.token_hex(3)}"
    saved = {"0": 500, "1": 70}
    await seed_progress(dsn, "dup", camp, resources=saved, last_x=300.0, last_y=400.0, last_vx=3.0, last_vy=-4.0)
    async with running_server(game="startales", pg_dsn=dsn, campaign=camp) as server:
        async with honest_bots(server, "startales"):
            peers = [await Peer().open(server) for _ in range(4)]
            for p in peers:  # four hellos of one account in one loop iteration, before any progress loaded
                p.hello("dup")
            await wait_for(lambda: peers[-1].welcome is not None)
            await wait_for(lambda: all(p.close_code == CloseCode.REPLACED for p in peers[:-1]))
            assert [p.welcome for p in peers[:-1]] == [None] * 3  # the replaced ones never played
            eid = peers[-1].welcome["player"]  # type: ignore[index]
            # One ship, under the real account id, restored once: no synthesized key, no second import.
            assert [k for k in server.campaign.accounts if not k.startswith("bot")] == ["dup"]
            assert ships(server) == BOTS + 1
            a, p = server.campaign.world.arrays, (eid & SLOT_MASK) - server.campaign.player_lo
            assert (int(a["bal_metal"][p]), int(a["bal_crystal"][p])) == (500, 70)
            assert int(a["ledger"][LEDGER_IMPORTED]) == 570
            x, y, _, _ = ship_state(server, eid)
            assert abs(x - 300.0) < 5 and abs(y - 400.0) < 5  # the saved position, a few ticks on
            # A later hello takes the ship over as it is: same entity, no join, no restore.
            joins = server.stats.joins
            late = await Peer().open(server)
            late.hello("dup")
            await wait_for(lambda: late.welcome is not None and peers[-1].close_code == CloseCode.REPLACED)
            assert late.welcome["player"] == eid and server.stats.joins == joins  # type: ignore[index]
            assert int(a["ledger"][LEDGER_IMPORTED]) == 570 and ships(server) == BOTS + 1
            assert late.conn is not None
            late.conn.close()
            await wait_for(lambda: "dup" not in server.campaign.accounts)
        assert server.progress is not None and await server.progress.pg.flush(10)
        assert server.door.log.bugs == 0
    no_tracebacks(caplog)
    conn = await asyncpg.connect(dsn)
    try:
        where = "WHERE account_id = 'dup' AND campaign_id = $1"
        rows = await conn.fetch(f"SELECT resources::text AS r FROM game_progress {where}", camp)
        txns = await conn.fetchval(f"SELECT count(*) FROM transactions {where}", camp)
    finally:
        await conn.close()
    assert len(rows) == 1 and json.loads(rows[0]["r"]) == saved  # not doubled, one row
    assert txns == 0  # the restore is no transaction; nothing was harvested or given


async def test_a_returning_ship_keeps_its_position_and_velocity(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn, camp = pg_dsn(pg_database), f"door-{secrets.token_hex(3)}"
    async with running_server(game="startales", pg_dsn=dsn, campaign=camp) as server:
        async with honest_bots(server, "startales"):
            first = await Peer().open(server)
            first.hello("ret")
            await wait_for(lambda: first.welcome is not None)
            eid = first.welcome["player"]  # type: ignore[index]
            a, s = server.campaign.world.arrays, eid & SLOT_MASK
            a["x"][s], a["y"][s], a["vx"][s], a["vy"][s] = 1234.5, 987.25, 6.0, -2.0  # test setup: somewhere far
            await asyncio.sleep(0.1)
            assert first.conn is not None
            first.conn.close()
            await wait_for(lambda: "ret" not in server.campaign.accounts)
            assert server.progress is not None
            stored = await server.progress.pg.load_progress("ret", camp)
            assert stored is not None and stored["last_vx"] is not None
            again = await Peer().open(server)
            again.hello("ret")
            await wait_for(lambda: again.welcome is not None)
            x, y, vx, vy = ship_state(server, again.welcome["player"])  # type: ignore[index]
            # Where it left, moving as it did (a few ticks on): not a fresh spawn point, no free teleport.
            assert abs(x - stored["last_x"]) < 5 and abs(y - stored["last_y"]) < 5, (x, y, stored)
            assert abs(vx - stored["last_vx"]) < 1 and abs(vy - stored["last_vy"]) < 1, (vx, vy, stored)
            assert abs(stored["last_x"] - 1234.5) < 5 and abs(stored["last_vx"] - 6.0) < 1
            assert again.conn is not None
            again.conn.close()
        assert server.door.log.bugs == 0
    no_tracebacks(caplog)


async def test_one_account_cannot_fill_the_campaign(caplog: pytest.LogCaptureFixture) -> None:
    ring = KeyRing.generate()
    issuer = TokenIssuer(ring)
    verifier = TokenVerifier(ring, "fill")
    cfg = {"max_players": BOTS + 2}
    async with running_server(verifier, game="wander", campaign="fill", game_config=cfg,
                              account_conflict="refuse") as server:  # fmt: skip
        async with honest_bots(server, "wander", ring.to_env(), "fill"):
            peers = [await Peer().open(server) for _ in range(10)]
            for p in peers:
                p.hello("x", issuer.issue("mallory", "fill", ttl=600))
            await wait_for(lambda: sum(p.close_code is not None for p in peers) == 9)
            playing = [p for p in peers if p.welcome is not None]
            assert len(playing) == 1 and server.campaign.accounts.get("mallory") is not None
            refused = [p for p in peers if p.close_code == CloseCode.ACCOUNT_IN_USE]
            assert len(refused) == 9
            assert all(f["code"] == ErrorCode.ACCOUNT_IN_USE for p in refused for f in p.frames if f["t"] == "err")
            # One slot is still free for an honest newcomer.
            honest = await Peer().open(server)
            honest.hello("x", issuer.issue("newcomer", "fill", ttl=600))
            await wait_for(lambda: honest.welcome is not None)
            for p in [*playing, honest]:
                assert p.conn is not None
                p.conn.close()
        assert server.door.log.bugs == 0
    no_tracebacks(caplog)


async def test_a_new_connection_continues_after_the_inputs_the_ship_already_had() -> None:
    """After a takeover the ship's applied seqs stay; the welcome's `a` tells a fresh client where
    to continue, so its very first input is applied instead of being dropped as a duplicate."""
    async with running_server(game="wander") as server:
        old, new = ClientSession(), ClientSession()  # `new`: another device, knowing nothing of `old`

        def feed(session: ClientSession) -> Callable[[bytes], None]:
            def on_message(m: bytes) -> None:
                session.receive(m, 0.0)

            return on_message

        conn = await ws_connect(url(server), feed(old))
        conn.send(old.hello("carol"))
        await wait_for(lambda: old.welcome is not None)
        assert old.welcome is not None and old.welcome.ack_seq == 0  # a new ship
        eid = old.welcome.player
        for _ in range(40):
            conn.send(old.input({}))
        await wait_for(lambda: server.campaign.last_seq(eid) == 40)

        conn2 = await ws_connect(url(server), feed(new))
        conn2.send(new.hello("carol"))
        await wait_for(lambda: new.welcome is not None and conn.closed.done())
        assert new.welcome is not None and (new.welcome.player, new.welcome.ack_seq) == (eid, 40)
        conn2.send(new.input({}))
        await wait_for(lambda: server.campaign.last_seq(eid) == 41)
        conn2.close()
