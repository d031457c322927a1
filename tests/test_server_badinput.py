"""Bad input at the boundary: each class gets its documented error or close code; nobody else notices."""

from __future__ import annotations

import asyncio
import math

import msgpack
import pytest

from netcode.client import ArbiterClient, ServerError
from netcode.protocol import CloseCode, ErrorCode, encode_hello, encode_input
from netcode.ws_client import ws_connect
from netcode.ws_frames import OP_BINARY, client_frame, frame_header
from tests.serverutil import running_server, url, wait_for

BAD_FRAMES = [
    (b"\xc1\xc1 not msgpack", ErrorCode.MALFORMED),
    (msgpack.packb([1, 2, 3]), ErrorCode.MALFORMED),
    (msgpack.packb({"x": 1}), ErrorCode.MALFORMED),
    (msgpack.packb({"t": "teleport", "x": 1}), ErrorCode.UNKNOWN_TYPE),
    (msgpack.packb({"t": "in", "s": 1, "ct": 0, "dx": math.nan, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "in", "s": 1, "ct": 0, "dx": math.inf, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "in", "s": 1, "ct": 0, "dx": 5.0, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "in", "s": "1", "ct": 0, "dx": 0.1, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "in", "s": -4, "ct": 0, "dx": 0.1, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "in", "s": True, "ct": 0, "dx": 0.1, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (msgpack.packb({"t": "in", "ct": 0, "dx": 0.1, "dy": 0.0}), ErrorCode.BAD_FIELD),
    (encode_hello("again"), ErrorCode.DUPLICATE_HELLO),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_each_bad_frame_gets_its_error_code(frame: bytes, code: ErrorCode) -> None:
    async with running_server(game="wander", game_config={"npcs": 20}) as server:
        observer = await ArbiterClient.connect(url(server), "observer")
        bad = await ArbiterClient.connect(url(server), "mallory")
        bad.send_raw(frame)
        await wait_for(lambda: len(bad.errors) >= 1)
        assert bad.errors[0].code == code
        # One offence is not a disconnect: the sender can go on playing.
        seq = bad.send_input(0.5, 0.0)
        await wait_for(lambda: bad.latest is not None and bad.latest.ack_seq == seq)
        await wait_for(lambda: observer.snapshots > 0)
        assert observer.is_open
        await bad.close()
        await observer.close()


async def test_repeated_offences_close_with_4000_and_the_tick_goes_on() -> None:
    async with running_server(game="wander", game_config={"npcs": 20}, max_offences=5) as server:
        observer = await ArbiterClient.connect(url(server), "observer")
        bad = await ArbiterClient.connect(url(server), "mallory")
        tick0 = server.campaign.tick_count
        for _ in range(10):
            bad.send_raw(b"garbage")
        code, _ = await bad.wait_closed()
        assert code == CloseCode.PROTOCOL_VIOLATION
        assert bad.bye is not None
        n0 = observer.snapshots
        await wait_for(lambda: observer.snapshots >= n0 + 5)
        assert server.campaign.tick_count > tick0
        assert bad.player not in server.campaign.players
        await observer.close()


async def test_text_frames_are_malformed() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}) as server:
        bad = await ArbiterClient.connect(url(server), "t")
        assert bad.conn is not None
        bad.conn.send_text(b'{"t": "in"}')
        await wait_for(lambda: len(bad.errors) >= 1)
        assert bad.errors[0].code == ErrorCode.MALFORMED
        await bad.close()


async def test_input_before_hello_is_not_ready() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}) as server:
        got: list[bytes] = []
        conn = await ws_connect(url(server), got.append)
        conn.send(encode_input(1, 0, {"dx": 0.1, "dy": 0.0}))
        await wait_for(lambda: len(got) >= 1)
        m = msgpack.unpackb(got[0])
        assert m["t"] == "err" and m["code"] == ErrorCode.NOT_READY
        conn.abort()


async def test_oversized_frame_closes_with_1009() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}, max_frame=4096) as server:
        observer = await ArbiterClient.connect(url(server), "observer")
        bad = await ArbiterClient.connect(url(server), "big")
        assert bad.conn is not None
        bad.conn.send(b"\x00" * 100_000)
        code, _ = await bad.wait_closed()
        assert code == 1009
        n0 = observer.snapshots
        await wait_for(lambda: observer.snapshots >= n0 + 3)
        await observer.close()


async def test_huge_declared_length_is_refused_without_buffering() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}) as server:
        bad = await ArbiterClient.connect(url(server), "liar")
        assert bad.conn is not None
        # Claims 2**40 bytes and sends a few: the server must fail the connection, not wait for them.
        bad.conn.send_raw(frame_header(OP_BINARY, 2**40, masked=True) + b"\x00\x00\x00\x00" + b"x" * 10)
        code, _ = await bad.wait_closed()
        assert code == 1009


async def test_wrong_protocol_version_is_refused() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}) as server:
        got: list[bytes] = []
        conn = await ws_connect(url(server), got.append)
        conn.send(encode_hello("old", "", version=99))
        code, _ = await asyncio.wait_for(conn.closed, 5)
        assert code == CloseCode.VERSION_MISMATCH
        assert msgpack.unpackb(got[0])["code"] == ErrorCode.VERSION_MISMATCH


async def test_handshake_timeout() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}, handshake_timeout=0.5) as server:
        conn = await ws_connect(url(server), lambda _: None)
        code, _ = await asyncio.wait_for(conn.closed, 5)
        assert code == CloseCode.HANDSHAKE_TIMEOUT


async def test_server_full_is_refused() -> None:
    async with running_server(game="wander", game_config={"npcs": 5, "max_players": 2}) as server:
        a = await ArbiterClient.connect(url(server), "a")
        b = await ArbiterClient.connect(url(server), "b")
        with pytest.raises(ServerError) as exc:
            await ArbiterClient.connect(url(server), "c")
        assert exc.value.code == ErrorCode.SERVER_FULL
        await a.close()
        await b.close()


async def test_input_flood_is_rate_limited_and_disconnected() -> None:
    async with running_server(game="wander", game_config={"npcs": 5}, input_rate=30.0, input_burst=10.0) as server:
        bad = await ArbiterClient.connect(url(server), "flood")
        assert bad.conn is not None
        seq = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        # A sustained flood: 100 inputs every 50 ms (2000/s against a 30/s budget) until disconnected.
        while bad.is_open and loop.time() < deadline:
            move = {"dx": 0.1, "dy": 0.0}
            frames = b"".join(client_frame(OP_BINARY, encode_input(seq + i + 1, 0, move)) for i in range(100))
            seq += 100
            bad.conn.send_raw(frames)
            await asyncio.sleep(0.05)
        code, _ = await bad.wait_closed()
        # The session's offence limit (4000) or fair play's kick for the flood (4005), whichever first.
        assert code in (CloseCode.PROTOCOL_VIOLATION, CloseCode.KICKED)
        assert any(e.code == ErrorCode.RATE_LIMITED for e in bad.errors)
        # Only the budget reached the sim: ~30/s plus the burst, not the 2000/s sent.
        reached = server.stats.inputs_accepted + server.stats.inputs_refused
        assert reached < 0.1 * seq, (reached, seq)
