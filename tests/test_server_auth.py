"""Join tokens at the server's door: each refusal class gets its code and close 4006; the tick goes on."""

from __future__ import annotations

import time

import pytest

from engine.security.auth import AuthCode, TokenIssuer, TokenVerifier
from engine.server import GameServer, ServerConfig
from netcode.client import ArbiterClient, ServerError
from netcode.protocol import CloseCode
from tests.serverutil import url
from tests.tokens import Tokens

TOKENS = Tokens()  # tests/tokens.py: the one source of test keys and tokens
RING, OTHER = TOKENS.ring, TOKENS.other


async def _server() -> GameServer:
    cfg = ServerConfig(port=0, data_dir="", game="wander", game_config={"npcs": 10}, campaign="camp")
    server = GameServer(cfg, verifier=TokenVerifier(RING, "camp"))
    await server.start()
    return server


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", AuthCode.TOKEN_MISSING),
        ("not.a.jwt", AuthCode.TOKEN_MALFORMED),
        (TokenIssuer(OTHER).issue("eve", "camp"), AuthCode.TOKEN_BAD_SIGNATURE),
        (TokenIssuer(RING).issue("eve", "camp", ttl=60, now=time.time() - 3600), AuthCode.TOKEN_EXPIRED),
        (TokenIssuer(RING).issue("eve", "camp", now=time.time() + 3600), AuthCode.TOKEN_NOT_YET_VALID),
        (TokenIssuer(RING).issue("eve", "other-campaign"), AuthCode.TOKEN_WRONG_CAMPAIGN),
    ],
)
async def test_bad_tokens_are_refused_with_their_code(token: str, code: AuthCode) -> None:
    import asyncio

    server = await _server()
    task = asyncio.create_task(server.run())
    try:
        with pytest.raises(ServerError) as exc:
            await ArbiterClient.connect(url(server), "eve", token)
        assert exc.value.code == code
        assert server.stats.auth_refusals == 1 and not server.campaign.players
        good = await ArbiterClient.connect(url(server), "ok", TokenIssuer(RING).issue("alice", "camp"))
        await good.next_snapshot()
        await good.close()
    finally:
        server.request_stop()
        await task


async def test_valid_token_plays_as_its_account_and_replay_is_refused() -> None:
    import asyncio

    server = await _server()
    task = asyncio.create_task(server.run())
    try:
        token = TokenIssuer(RING).issue("acct-42", "camp", name="Ada")
        c = await ArbiterClient.connect(url(server), "ignored-name", token)
        assert server.campaign.accounts == {"acct-42": c.player}
        assert server.campaign.players[c.player] == "Ada"
        # The same token again (a stolen or replayed token) is refused and closed with 4006.
        with pytest.raises(ServerError) as exc:
            await ArbiterClient.connect(url(server), "x", token)
        assert exc.value.code == AuthCode.TOKEN_REPLAYED
        await c.close()
    finally:
        server.request_stop()
        await task


async def test_refused_hello_closes_with_4006() -> None:
    import asyncio

    from netcode.protocol import encode_hello
    from netcode.ws_client import ws_connect

    server = await _server()
    task = asyncio.create_task(server.run())
    try:
        conn = await ws_connect(url(server), lambda _: None)
        conn.send(encode_hello("mallory", "garbage"))
        code, _ = await asyncio.wait_for(conn.closed, 5)
        assert code == CloseCode.UNAUTHORIZED
    finally:
        server.request_stop()
        await task


async def test_a_used_token_stays_used_across_a_restart(tmp_path: object) -> None:
    import asyncio

    cfg = ServerConfig(port=0, data_dir=str(tmp_path), game="wander", game_config={"npcs": 10}, campaign="camp")
    token = TokenIssuer(RING).issue("acct-7", "camp")
    for attempt in range(2):
        server = GameServer(cfg, verifier=TokenVerifier(RING, "camp"))  # a fresh, empty replay cache
        await server.start()
        task = asyncio.create_task(server.run())
        try:
            if attempt == 0:
                c = await ArbiterClient.connect(url(server), "a", token)
                await c.close()
            else:
                with pytest.raises(ServerError) as exc:
                    await ArbiterClient.connect(url(server), "a", token)
                assert exc.value.code == AuthCode.TOKEN_REPLAYED
        finally:
            server.request_stop()
            await task
