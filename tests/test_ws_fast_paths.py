"""The per-message fast paths of the transports and the client SDK give exactly what the general
paths give: single-frame reads (server and client side), pooled masking keys, the hand-built input
encoder and the count-only delta header peek."""

from __future__ import annotations

import asyncio
import math
import random

import msgpack
import pytest

from bench.inbound import UPGRADE, FakeTransport
from netcode.client import ArbiterClient
from netcode.client_session import encode_fields, fields_from_spec
from netcode.protocol import ErrorCode, encode_input
from netcode.replication.frames import decode_delta_frame, encode_delta_frame, peek_delta_tick
from netcode.session import InputEvent, ServerSession, SessionState
from netcode.ws_client import WsClientConnection
from netcode.ws_frames import OP_BINARY, OP_CLOSE, OP_TEXT, FrameReader, client_frame, frame_header, server_frame
from netcode.ws_server import DoorLimits, WsServerConnection
from sim.games.startales.game import Startales
from tests.serverutil import running_server, url, wait_for


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        self.closed = False

    def on_connect(self, conn: WsServerConnection) -> bool:
        return True

    def on_error(self, conn: WsServerConnection, cause: str, exc: BaseException | None) -> None:
        assert exc is None, exc

    def http_request(self, path: str, headers: object = None, method: str = "GET") -> None:
        return None

    def on_open(self, conn: WsServerConnection) -> None:
        pass

    def on_message(self, conn: WsServerConnection, payload: bytes, is_text: bool) -> None:
        self.messages.append((payload, is_text))

    def on_close(self, conn: WsServerConnection) -> None:
        self.closed = True


def _server(max_size: int = 4096) -> tuple[WsServerConnection, Recorder, FakeTransport]:
    rec = Recorder()
    conn = WsServerConnection(rec, DoorLimits(max_size=max_size, max_message=max_size), lambda: 0.0)
    t = FakeTransport(0)
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(UPGRADE)
    assert conn.is_open
    t.out.clear()
    return conn, rec, t


def test_server_reads_whole_split_and_batched_frames_alike() -> None:
    rng = random.Random(1)
    payloads = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 40, 125, 126, 200, 3000, 44, 7)]
    stream = b"".join(client_frame(OP_BINARY, p) for p in payloads) + client_frame(OP_TEXT, b"txt")
    want = [(p, False) for p in payloads] + [(b"txt", True)]
    for chunking in ("frame", "all", "split"):
        conn, rec, _ = _server()
        if chunking == "all":
            conn.data_received(stream)
        elif chunking == "frame":
            for p in payloads:
                conn.data_received(client_frame(OP_BINARY, p))
            conn.data_received(client_frame(OP_TEXT, b"txt"))
        else:
            for i in range(0, len(stream), 37):
                conn.data_received(stream[i : i + 37])
        assert rec.messages == want, chunking
        assert conn.msgs_in == len(want)


def test_server_fast_path_keeps_the_limits() -> None:
    conn, rec, _ = _server()
    conn.data_received(server_frame(OP_BINARY, b"unmasked"))  # a client must mask
    assert rec.messages == [] and conn.close_code == 1002
    conn, rec, _ = _server(max_size=50)
    conn.data_received(client_frame(OP_BINARY, b"x" * 100))  # a 7-bit length, over max_size
    assert rec.messages == [] and conn.close_code == 1009
    conn, rec, _ = _server()
    conn.data_received(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    conn.data_received(client_frame(OP_BINARY, b"after close"))
    assert rec.messages == []


def test_server_fast_path_waits_for_a_buffered_partial_frame() -> None:
    conn, rec, _ = _server()
    a = client_frame(OP_BINARY, b"first")
    b = client_frame(OP_BINARY, b"second")
    conn.data_received(a[:3])
    conn.data_received(a[3:])  # looks like garbage on its own: must go through the reader
    conn.data_received(b)
    assert rec.messages == [(b"first", False), (b"second", False)]


@pytest.mark.asyncio
async def test_client_reads_whole_split_and_truncated_frames_alike() -> None:
    got: list[bytes] = []
    conn = WsClientConnection("x", "/", got.append)
    t = FakeTransport(0)
    conn.connection_made(t)  # type: ignore[arg-type]
    key = conn._key
    from websockets.utils import accept_key

    conn.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )
    await asyncio.wait_for(conn.opened, 1)
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 5000, b"d" * 70000]
    for p in payloads:
        conn.data_received(server_frame(OP_BINARY, p))
    stream = b"".join(server_frame(OP_BINARY, p) for p in payloads)
    for i in range(0, len(stream), 999):
        conn.data_received(stream[i : i + 999])
    assert got == payloads + payloads
    got.clear()
    conn.count_only(48, over=4096)
    for p in payloads:
        conn.data_received(server_frame(OP_BINARY, p))
    assert got == [b"", b"a" * 125, b"b" * 126, b"c" * 48, b"d" * 48]


def test_client_frames_use_fresh_keys_and_unmask() -> None:
    reader = FrameReader(masked=True)
    keys = set()
    for n in (0, 5, 125, 126, 70000):
        f = client_frame(OP_BINARY, b"z" * n)
        assert reader.feed(f) == [(OP_BINARY, b"z" * n)]
        hdr = len(frame_header(OP_BINARY, n, masked=True))
        keys.add(f[hdr : hdr + 4])
    for _ in range(3000):  # past one block of keys
        keys.add(client_frame(OP_BINARY, b"k")[2:6])
    assert len(keys) > 2900


def test_encode_fields_is_encode_input_byte_for_byte() -> None:
    """The hand-built input frame equals msgpack's for any spec's fields: floats always (float32),
    integers when not 0."""
    spec = {"inputs": [["dx", "f32", -1, 1], ["dy", "f32", -1, 1], ["a", "i32", 0, 255], ["tx", "u32", 0, 2**32 - 1]]}
    fields = fields_from_spec(spec)
    rng = random.Random(7)
    ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1]
    acks = [None, 0, 127, 128, 65536, 2**32, 2**40, 2**64 - 1]
    floats = [0.0, -0.0, 1.0, -1.0, 1 / 3, 1e-45, 3.4e38, math.inf, -math.inf, math.nan]
    for _ in range(20000):
        seq = rng.choice(ints) if rng.random() < 0.5 else rng.randrange(2**32)
        ct = rng.choice(ints) if rng.random() < 0.5 else rng.randrange(2**32)
        dx = rng.choice(floats) if rng.random() < 0.3 else rng.uniform(-1.5, 1.5)
        dy = rng.choice(floats) if rng.random() < 0.3 else rng.uniform(-1.5, 1.5)
        values: dict[str, float | int] = {"dx": dx, "dy": dy, "a": rng.choice([0, 0, 3])}
        values["tx"] = rng.choice([0, 2**32 - 1])
        ack = rng.choice(acks)
        fast = encode_fields(seq, ct, fields, values, ack)
        assert fast == encode_input(seq, ct, {k: v for k, v in values.items() if v or k in ("dx", "dy")}, ack)
    assert encode_fields(1, 1, fields, {"dx": 3.5e38}, None) is None  # beyond float32: the general encoder
    assert encode_fields(-1, 1, fields, {}, None) is None
    assert encode_fields(1, 1, fields, {"a": -3}, None) is None  # a negative int: the general encoder


def test_peek_delta_tick_matches_the_decoder() -> None:
    for tick in (1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**40):
        f = encode_delta_frame(tick, tick - 1, 9, b"\x00\x00\x00")
        assert peek_delta_tick(f) == decode_delta_frame(f).tick == tick
        assert peek_delta_tick(f[:7]) is None
    assert peek_delta_tick(b"\x85\xa1t\xa1s\xa1k\x05") is None  # a raw snapshot, not a delta
    assert peek_delta_tick(b"\x85\xa1t\xa1d\xa1k\xc0") is None  # nil is no tick


def test_session_fast_path_takes_the_snapshot_ack() -> None:
    s = ServerSession(inputs=Startales.inputs)
    s.state = SessionState.ACTIVE
    (ev,) = s.receive(encode_input(7, 3, {"dx": 0.25, "dy": -0.5}, 900), 1.0)
    assert isinstance(ev, InputEvent)
    assert (ev.seq, ev.client_tick, ev.values, ev.ack) == (7, 3, (0.25, -0.5, 0, 0, 0, 0, 0), 900)
    assert s.last_ack_tick == 900 and s.last_input_seq == 7
    s.receive(encode_input(8, 3, {"dx": 0.25, "dy": -0.5}, 800), 1.1)  # an older ack does not go back
    assert s.last_ack_tick == 900
    (ev,) = s.receive(encode_input(9, 3, {"dx": 0.0, "dy": 0.0}, 2**64 - 1), 1.2)
    assert isinstance(ev, InputEvent)
    assert ev.ack == 2**64 - 1 and s.last_ack_tick == 2**64 - 1
    assert s.offences == 0
    # Anything else with six keys takes the checked path and gets its precise error.
    bad = [
        {"t": "in", "s": 1, "ct": 0, "dx": 0.1, "dy": 0.0, "ack": -1},
        {"t": "in", "s": 1, "ct": 0, "dx": 0.1, "dy": 0.0, "ack": True},
        {"t": "in", "s": 1, "ct": 0, "dx": 0.1, "dy": 0.0, "ack": 1.5},
        {"t": "in", "s": 1, "ct": 0, "dx": math.nan, "dy": 0.0, "ack": 5},
    ]
    for k, m in enumerate(bad):
        assert s.receive(msgpack.packb(m), 2.0 + k) == []
    assert s.offences == len(bad)
    assert [msgpack.unpackb(f)["code"] for f in s.data_to_send()] == [ErrorCode.BAD_FIELD] * len(bad)
    (ev,) = s.receive(msgpack.packb({"t": "in", "s": 20, "ct": 0, "dx": 0.1, "dy": 0.0, "a": 1}), 3.0)
    assert isinstance(ev, InputEvent)
    assert ev.values[2] == 1 and ev.ack is None


async def test_a_client_claiming_any_ack_is_served_from_scratch() -> None:
    async with running_server(game="wander", game_config={"npcs": 20}) as server:
        liar = await ArbiterClient.connect(url(server), "liar")
        honest = await ArbiterClient.connect(url(server), "honest")
        liar.send_raw(encode_input(1, 0, {"dx": 0.1, "dy": 0.0}, 2**64 - 1))
        await wait_for(lambda: server.clients and all(c.session.last_input_seq >= 1 for c in server.clients.values()
                                                      if c.name == "liar"))  # fmt: skip
        seen = liar.snapshots, honest.snapshots
        await wait_for(lambda: liar.snapshots >= seen[0] + 5 and honest.snapshots >= seen[1] + 5)
        assert not liar.errors and liar.is_open and honest.is_open
        await liar.close()
        await honest.close()


def test_upgrade_request_fed_a_byte_at_a_time_opens() -> None:
    rec = Recorder()
    conn = WsServerConnection(rec, DoorLimits(), lambda: 0.0)
    t = FakeTransport(0)
    conn.connection_made(t)  # type: ignore[arg-type]
    for i in range(len(UPGRADE)):
        conn.data_received(UPGRADE[i : i + 1])
    assert conn.is_open and t.out.startswith(b"HTTP/1.1 101")
    conn.data_received(client_frame(OP_BINARY, b"after"))
    assert rec.messages == [(b"after", False)]
