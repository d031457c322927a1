"""Fair play end to end: real GameServers, real sockets, the default policy (docs/fairplay.md).

- Honest startales bots behind a jittery, bursty proxy are never flagged, and get real work done;
  an honest transfer retried over the same link moves resources once and is not a violation.
- Join-token abuse and connection floods are refused with their codes and scored against the address.
- A ban decided by the policy, and an operator's ban, survive a restart: SQLite on the data dir, and
  PostgreSQL when configured; the audit log keeps the decision with its tick range and violations.
- A ban store that cannot be reached at start does not keep the server down.

One cheat bot per class: tests/test_fairplay_cheats_e2e.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import msgpack
import pytest

from engine.security.auth import AuthCode, TokenIssuer, TokenVerifier
from engine.security.fairplay.conn_limit import ConnLimitConfig
from engine.security.fairplay.kinds import V_BAD_TOKEN, V_TOKEN_REPLAY
from engine.security.fairplay.referee import FairPlayConfig
from engine.server import GameServer
from engine.tools.bots import BotConfig, run_bots
from netcode.client import ArbiterClient, ServerError
from netcode.protocol import CloseCode, ErrorCode, encode_hello
from netcode.ws_client import HandshakeError, ws_connect
from sim.games.startales.constants import (
    ACH_VOYAGER,
    ACTION_CLAIM,
    ACTION_GIFT,
    ACTION_HARVEST,
    ACTION_STOP,
    EV_RECEIVED,
    EV_TRANSFER,
    TXN_APPLIED,
    TXN_DUPLICATE,
    scan_arg,
)
from tests.fairplay_e2e_util import (
    Escalation,
    check_ladder,
    escalate,
    events_of,
    pace,
    park,
    planets,
    pv,
    server_with_verifier,
)
from tests.pgutil import dsn as pg_dsn
from tests.pgutil import fresh_database
from tests.serverutil import running_server, url, wait_for
from tests.tcp_proxy import TcpProxy
from tests.tokens import Tokens

# -- 1a. honest players ---------------------------------------------------------------------------------
# Small and dense (planets of both resources ~100-150 u apart): every bot gets to harvest both and
# build within the run, even on a busy 2-core box.
SMALL_WORLD = {"max_players": 64, "width": 400, "height": 400, "planets": 6, "drones": 20}


async def test_honest_bots_behind_a_jittery_link_are_never_flagged() -> None:
    async with running_server(game="startales", game_config=SMALL_WORLD) as server:
        proxy = TcpProxy("127.0.0.1", server.port, latency=0.15, jitter=0.05, burst_every=(3.0, 6.0),
                         burst_extra=(0.15, 0.35), seed=1)  # fmt: skip
        await proxy.start()
        purl = f"ws://127.0.0.1:{proxy.port}/"
        try:
            bots = asyncio.create_task(
                run_bots(BotConfig(url=purl, count=12, duration=18.0, brain_options={"dwell_s": 1.5}, seed=7))
            )
            gift = await honest_transfer_with_retries(server, purl)
            report = await bots
        finally:
            await proxy.close()
        referee = server.fairplay.referee
        assert not referee.violations, dict(referee.violations)
        assert not referee.decisions, dict(referee.decisions)
        assert len(referee.policy) == 0
        assert report.connected == 12 and report.connect_failures == 0, report
        assert report.closed_early == 0 and report.errors_seen == 0, report
        assert report.brain["built"] > 0 and report.brain["achievements"] > 0, report
        assert gift["applied"] == 1 and gift["duplicates"] == 2, gift


async def honest_transfer_with_retries(server: GameServer, purl: str) -> dict[str, int]:
    """Two honest players over the lossy link: a gift, retried twice as a client does when its
    confirmation is late, moves the resource exactly once and is answered as a duplicate."""
    giver = await ArbiterClient.connect(purl, "giver")
    taker = await ArbiterClient.connect(purl, "taker")
    try:
        park(server, giver.player, planets(server, res=0)[0])
        giver.send_input(0.0, 0.0, ACTION_HARVEST, 0)
        await wait_for(lambda: (pv(server, giver.player, "bal_metal") or 0) >= 40, 10)
        giver.send_input(0.0, 0.0, ACTION_STOP, 0)
        await wait_for(lambda: pv(server, giver.player, "harvest_target") == 0, 5)
        gift = (0.0, 0.0, ACTION_GIFT, scan_arg(taker.player))
        args = {"g2": 0, "g3": 25, "tx": 7}
        giver.send_input(*gift, **args)
        await asyncio.sleep(0.05)  # the client's retry timer: the confirmation takes a round trip (~0.3 s)
        giver.send_input(*gift, **args)
        giver.send_input(*gift, **args)
        await wait_for(lambda: len([e for e in events_of(giver, EV_TRANSFER) if e[1] == 7]) >= 3, 10)
        statuses = [e[2] for e in events_of(giver, EV_TRANSFER) if e[1] == 7]

        # The taker got it once. It never harvests, so its balance is what it was given (a bot may
        # have given it something too: those are counted from its events as well).
        def metal_given() -> int:
            return sum(b // 2 for _, _, b in events_of(taker, EV_RECEIVED) if b % 2 == 0)

        await wait_for(lambda: [e for e in events_of(taker, EV_RECEIVED) if e[1] == giver.player], 10)
        assert [e[2] for e in events_of(taker, EV_RECEIVED) if e[1] == giver.player] == [25 * 2 + 0]
        await wait_for(lambda: pv(server, taker.player, "bal_metal") == metal_given(), 10)
        return {"applied": statuses.count(TXN_APPLIED), "duplicates": statuses.count(TXN_DUPLICATE)}
    finally:
        await giver.close()
        await taker.close()


# -- tokens and connection floods, scored against the address -----------------------------------------
RING, OTHER_RING = Tokens().ring, Tokens().other  # tests/tokens.py
CAMP = "fp-e2e"


async def test_bad_and_replayed_tokens_are_refused_and_scored_against_the_address() -> None:
    issuer = TokenIssuer(RING)
    # Loopback addresses are only scored when asked to (by default a developer's misconfigured
    # tokens must not ban localhost); these tests connect from 127.0.0.1.
    fp = FairPlayConfig(conn=ConnLimitConfig(loopback=True, rate=0))  # scoring, not the connection limit
    async with server_with_verifier(TokenVerifier(RING, CAMP), game="wander", campaign=CAMP,
                                    game_config={"npcs": 5}, fairplay=fp) as server:  # fmt: skip
        referee = server.fairplay.referee
        good = issuer.issue("alice", CAMP, ttl=60)
        alice = await ArbiterClient.connect(url(server), "alice", good)
        cases = [
            (issuer.issue("eve", CAMP, ttl=60, now=time.time() - 3600), AuthCode.TOKEN_EXPIRED),
            (TokenIssuer(OTHER_RING).issue("eve", CAMP), AuthCode.TOKEN_BAD_SIGNATURE),
            (issuer.issue("eve", "another-campaign"), AuthCode.TOKEN_WRONG_CAMPAIGN),
            (good, AuthCode.TOKEN_REPLAYED),
        ]
        for token, refusal in cases:
            code = int(refusal)
            got: list[bytes] = []
            conn = await ws_connect(url(server), got.append)
            conn.send(encode_hello("eve", token))
            closed, _ = await asyncio.wait_for(conn.closed, 5)
            assert (closed, msgpack.unpackb(got[0])["code"]) == (CloseCode.UNAUTHORIZED, code), token
        assert referee.violations == {"bad_token": 3, "token_replay": 1}
        rec = referee.policy.record("ip:127.0.0.1")
        assert rec is not None and [v.kind for v in rec.evidence] == [V_BAD_TOKEN] * 3 + [V_TOKEN_REPLAY]
        assert referee.policy.score("ip:127.0.0.1", server.now()) == pytest.approx(3 * 6 + 10, abs=0.5)
        assert referee.policy.record("acct:alice") is None and alice.is_open

        # Keep forging: the address climbs the same ladder and is banned; then every new connection
        # from it is refused at once (err 21, close 4007), before any hello.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        forged = TokenIssuer(OTHER_RING)
        while True:
            got.clear()
            conn = await ws_connect(url(server), got.append)
            conn.send(encode_hello("eve", forged.issue("eve", CAMP)))
            code, _ = await asyncio.wait_for(conn.closed, 5)
            first = msgpack.unpackb(got[0]) if got else {}
            assert first.get("code") == AuthCode.TOKEN_BAD_SIGNATURE, first
            if code == CloseCode.BANNED:  # the connection whose violation decided the ban
                break
            assert code == CloseCode.UNAUTHORIZED
            assert loop.time() < deadline, dict(referee.decisions)
        assert referee.decisions["ban"] == 1
        got.clear()
        conn = await ws_connect(url(server), got.append)  # refused at connect, before any hello
        code, _ = await asyncio.wait_for(conn.closed, 5)
        assert code == CloseCode.BANNED and msgpack.unpackb(got[0])["code"] == ErrorCode.BANNED
        bans = [b for b in referee.bans._bans.values() if b.ip_range]
        assert [b.ip_range for b in bans] == ["127.0.0.1/32"] and bans[0].account is None
        await wait_for(lambda: not alice.is_open)  # an address ban closes that address's sessions too
        await alice.close()


async def test_connection_flood_from_one_address_is_refused_at_accept() -> None:
    fp = FairPlayConfig(conn=ConnLimitConfig(loopback=True, rate=5, burst=5))
    async with running_server(game="wander", game_config={"npcs": 5}, fairplay=fp) as server:
        referee = server.fairplay.referee
        conns: list[tuple[Any, list[bytes]]] = []
        failed = 0
        for _ in range(10):  # back to back: 5 fit the burst, then 5/s; the rest are a flood
            got: list[bytes] = []
            try:
                conns.append((await ws_connect(url(server), got.append), got))
            except (HandshakeError, OSError):
                failed += 1  # dropped at TCP accept, before a byte of it was read (docs/security.md)
        refused = referee.conn_limiter.refused
        assert refused >= 1 and failed == refused
        assert all(c.is_open for c, _ in conns[:5])  # the burst was let in
        assert len(server.clients) == 10 - refused
        assert referee.violations == {"connection_flood": refused}
        assert referee.policy.score("ip:127.0.0.1", server.now()) == pytest.approx(10 * refused, abs=0.5)
        # those let in can play
        conn0, got0 = conns[0]
        conn0.send(encode_hello("early"))
        await wait_for(lambda: any(msgpack.unpackb(m)["t"] == "welcome" for m in got0))
        for conn, _ in conns:
            conn.abort()


# -- 1c. bans survive restarts ----------------------------------------------------------------------------
async def forge_until_banned(server: GameServer, account: str) -> Escalation:
    async def play(c: ArbiterClient, rnd: int, e: Escalation) -> None:
        nxt = asyncio.get_running_loop().time()
        while c.is_open:
            c.send_input(0.0, 0.0, ACTION_CLAIM, ACH_VOYAGER)
            nxt = await pace(0.1, nxt)

    return await escalate(server, account, play)


async def check_restart_keeps_bans(**cfg: Any) -> None:
    world = {"max_players": 16, "width": 1000, "height": 1000, "planets": 6, "drones": 10}
    async with running_server(game="startales", game_config=world, **cfg) as server:
        e = await forge_until_banned(server, "forger")
        check_ladder(e)
        admin_ban = server.fairplay.referee.ban("villain", None, "operator ban", None, "ops")
        assert admin_ban.account == "villain"
        banned_at_tick = server.campaign.tick_count
    async with running_server(game="startales", game_config=world, **cfg) as server:
        referee = server.fairplay.referee
        for account in ("forger", "villain"):
            with pytest.raises(ServerError) as exc:
                await ArbiterClient.connect(url(server), account)
            assert exc.value.code == ErrorCode.BANNED, account
        assert referee.refused_hellos == 2
        ok = await ArbiterClient.connect(url(server), "bystander")  # nobody else is affected
        await ok.next_snapshot()
        bans = {b.account: b for b in await referee.store.list_bans(time.time())}
        assert set(bans) == {"forger", "villain"}
        assert bans["forger"].created_by == "policy" and bans["forger"].until is not None
        assert bans["forger"].until > time.time() + 3000  # the default 1 h
        assert bans["villain"].until is None and bans["villain"].created_by == "ops"
        audit = await referee.store.read_audit(100, "forger")
        actions = [a.action for a in reversed(audit)]  # oldest first
        assert actions[0] == "warn" and "kick" in actions and actions[-1] == "ban", actions
        ev = audit[0].evidence
        assert 0 < ev["from_tick"] <= ev["to_tick"] <= banned_at_tick, ev
        assert ev["violations"] and {v["name"] for v in ev["violations"]} == {"forged_claim"}
        assert all(ev["from_tick"] <= v["tick"] <= ev["to_tick"] for v in ev["violations"])
        if cfg.get("data_dir"):  # how to reproduce it from the journal
            assert f"--from-tick {ev['from_tick']} --to-tick {ev['to_tick']}" in ev["replay"], ev["replay"]
        villain = await referee.store.read_audit(10, "villain")
        assert [a.action for a in villain] == ["ban"] and villain[0].evidence["by"] == "ops"
        await ok.close()


async def test_bans_survive_a_restart_sqlite(tmp_path: Any) -> None:
    await check_restart_keeps_bans(data_dir=str(tmp_path), campaign="persist")
    assert (tmp_path / "persist" / "fairplay.sqlite").exists()


async def test_bans_survive_a_restart_postgres() -> None:
    async with fresh_database("arbiter_fpe2e") as name:
        dsn = pg_dsn(name)
        # No data dir: the campaign lives in memory, so what survives can only have come from PostgreSQL.
        await check_restart_keeps_bans(data_dir="", campaign="persist-pg", pg_dsn=dsn)
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            rows = await conn.fetch("SELECT account_id FROM bans WHERE lifted_at IS NULL ORDER BY ban_id")
            assert [r["account_id"] for r in rows] == ["forger", "villain"]
        finally:
            await conn.close()


async def test_server_starts_and_bans_while_the_ban_store_is_unreachable() -> None:
    """PostgreSQL down at start: the server still serves; bans decided meanwhile hold in memory."""
    async with running_server(game="wander", game_config={"npcs": 5}, pg_dsn="postgresql://127.0.0.1:9/none",
                              campaign="pg-down") as server:  # fmt: skip
        c = await ArbiterClient.connect(url(server), "eve")
        server.fairplay.referee.ban("eve", None, "test", 60.0, "ops")
        await wait_for(lambda: not c.is_open)
        with pytest.raises(ServerError) as exc:
            await ArbiterClient.connect(url(server), "eve")
        assert exc.value.code == ErrorCode.BANNED
