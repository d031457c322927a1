"""Wire format: encoders, the hand-built snapshot, dtype on the wire, client-side decoding."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from netcode.client_session import Bye, ClientSession, Error, Events, Pong, Snapshot, Welcome
from netcode.protocol import (
    PROTOCOL_VERSION,
    CloseCode,
    ErrorCode,
    PreparedSnapshot,
    ProtocolError,
    SnapshotEncoder,
    dtype_from_wire,
    dtype_to_wire,
    encode_bye,
    encode_error,
    encode_events,
    encode_pong,
    encode_snapshot,
    encode_welcome,
    pack_uint,
    peek_snapshot_header,
)
from netcode.session import HelloEvent, InputEvent, PingEvent, ServerSession
from sim.games.startales.game import Startales

REC = np.dtype([("id", "<u4"), ("x", "<f4"), ("y", "<f4"), ("hp", "<u2"), ("state", "|u1")])
INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1]


def test_codes_are_the_documented_numbers() -> None:
    assert [int(c) for c in ErrorCode] == [*range(1, 10), 20, 21, 22, 23, 24, 25, 26, 27]
    assert ErrorCode.RATE_LIMITED == 9 and ErrorCode.TOO_LARGE == 8
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "TOO_BIG": 1009,
        "PROTOCOL_VIOLATION": 4000,
        "TOO_SLOW": 4001,
        "HANDSHAKE_TIMEOUT": 4002,
        "VERSION_MISMATCH": 4003,
        "SERVER_FULL": 4004,
        "KICKED": 4005,
        "UNAUTHORIZED": 4006,
        "BANNED": 4007,
        "TOO_MANY_CONNECTIONS": 4008,
        "REPLACED": 4009,
        "ACCOUNT_IN_USE": 4010,
        "UNKNOWN_CAMPAIGN": 4011,
    }


@pytest.mark.parametrize("n", [*INTS, 2**32, 2**64 - 1])
def test_pack_uint_matches_msgpack(n: int) -> None:
    assert pack_uint(n) == msgpack.packb(n)


def test_pack_uint_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        pack_uint(-1)
    with pytest.raises(ValueError):
        pack_uint(2**64)


@pytest.mark.parametrize("size", [0, 1, 300, 70000])
@pytest.mark.parametrize("tick", [0, 127, 128, 255, 65535, 2**32 - 1])
@pytest.mark.parametrize("seq", [0, 127, 128, 255, 65535, 2**32 - 1])
def test_hand_built_snapshot_is_msgpack(tick: int, seq: int, size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    prep = PreparedSnapshot(tick, body)
    frame = prep.frame(seq)
    reference = {"t": "s", "k": tick, "a": seq, "e": body}
    assert msgpack.unpackb(frame) == reference
    # Byte-identical to the library's own encoding, so any msgpack decoder reads it.
    assert frame == msgpack.packb(reference)
    assert peek_snapshot_header(frame) == (tick, seq)
    assert encode_snapshot(tick, seq, body) == frame


def test_prepared_snapshot_shares_tail_between_clients() -> None:
    recs = np.zeros(5, REC)
    recs["id"] = np.arange(5)
    prep = SnapshotEncoder(REC).prepare(9, recs)
    a, b = prep.frame(1), prep.frame(300)
    assert a.endswith(prep.tail) and b.endswith(prep.tail)
    assert msgpack.unpackb(a)["e"] == recs.tobytes() == msgpack.unpackb(b)["e"]
    assert msgpack.unpackb(b)["a"] == 300


def test_snapshot_encoder_checks_dtype() -> None:
    enc = SnapshotEncoder(REC)
    with pytest.raises(ValueError):
        enc.prepare(1, np.zeros(3, np.dtype([("id", "<u4")])))
    with pytest.raises(ValueError):
        enc.prepare(1, b"\x00" * (REC.itemsize + 1))


def test_peek_falls_back_for_other_key_orders_and_rejects_non_snapshots() -> None:
    other_order = msgpack.packb({"e": b"", "a": 7, "t": "s", "k": 1000})
    assert peek_snapshot_header(other_order) == (1000, 7)
    assert peek_snapshot_header(encode_bye("x")) is None
    assert peek_snapshot_header(b"\xc1garbage") is None
    assert peek_snapshot_header(b"\x84\xa1t\xa1s\xa1k") is None  # truncated header
    assert peek_snapshot_header("text") is None


def test_dtype_round_trip() -> None:
    wire = dtype_to_wire(REC)
    assert wire == [["id", "<u4"], ["x", "<f4"], ["y", "<f4"], ["hp", "<u2"], ["state", "|u1"]]
    back = dtype_from_wire(msgpack.unpackb(msgpack.packb(wire)))
    assert back == REC and back.itemsize == 15


@pytest.mark.parametrize(
    "dt",
    [
        np.dtype([("a", "<u4"), ("b", "|u1")], align=True),  # padded
        np.dtype([("a", ">u4")]),  # big-endian
        np.dtype([("a", "<u4", (2,))]),  # sub-array
        np.dtype([("a", "O")]),
        np.dtype("<u4"),  # not a record
    ],
)
def test_dtype_to_wire_refuses_unportable(dt: np.dtype) -> None:
    with pytest.raises(ValueError):
        dtype_to_wire(dt)


@pytest.mark.parametrize(
    "spec",
    [
        [],
        "x",
        [["a"]],
        [["a", "<u4"], ["a", "<u4"]],
        [["a", ">u4"]],
        [["a", "O"]],
        [["a", "<V8"]],
        [[1, "<u4"]],
        [["", "<u4"]],
        [["a", "<u4", "x"]],
    ],
)
def test_dtype_from_wire_refuses_bad_specs(spec: object) -> None:
    with pytest.raises(ProtocolError) as ei:
        dtype_from_wire(spec)
    assert ei.value.code is ErrorCode.BAD_FIELD


# ------------------------------------------------------------------ full round trips


STARTALES = Startales()


def _joined() -> tuple[ServerSession, ClientSession, Welcome]:
    srv, cli = ServerSession(inputs=STARTALES.inputs), ClientSession()
    (hello,) = srv.receive(cli.hello("alice", "tok"), 0.0)
    assert hello == HelloEvent("alice", "tok", PROTOCOL_VERSION)
    srv.accept(0x00100003, 500, 60, 20, "startales", {"world_w": 4000.0, "ships": 3, "mode": "pvp"}, REC,
               spec=STARTALES.wire_spec())  # fmt: skip
    (welcome,) = cli.receive(srv.data_to_send()[0], 0.0)
    assert isinstance(welcome, Welcome)
    return srv, cli, welcome


def test_handshake_round_trip() -> None:
    _, cli, w = _joined()
    assert w.player == 0x00100003 and w.tick == 500 and w.tick_rate == 60 and w.send_rate == 20
    assert w.game == "startales"
    assert w.world == {"world_w": 4000.0, "ships": 3, "mode": "pvp"}
    assert w.dtype == REC
    assert w.spec == STARTALES.wire_spec()
    assert cli.last_tick == 500


def test_welcome_spec_is_contract_one() -> None:
    """The welcome's `spec` (TEAM.md contract 1): inputs as [key, type, lo, hi] on the wire keys of
    today, the move binding, events and actions by kind, draw hints."""
    _, _, w = _joined()
    spec = w.spec
    assert set(spec) == {"inputs", "move", "events", "draw", "actions"}
    assert [f[:2] for f in spec["inputs"]] == [["dx", "f32"], ["dy", "f32"], ["a", "i32"], ["g", "i32"], ["g2", "i32"],
                                               ["g3", "i32"], ["tx", "u32"]]  # fmt: skip
    assert spec["inputs"][0][2:] == [-1.0, 1.0] and spec["inputs"][2][2:] == [0, 255]
    assert spec["move"] == {"rule": "thrust", "in": ["dx", "dy"], "accel": 200.0, "max_speed": 300.0,
                            "bounds": [0.0, 0.0, 4000.0, 4000.0]}  # fmt: skip
    assert spec["events"]["3"] == "refused" and spec["events"]["5"] == "scanned"
    assert spec["actions"]["4"] == "scan"
    draw = spec["draw"]
    assert draw["field"] == "kind" and set(draw) == {"field", "styles", "default", "player"}
    assert set(draw["styles"]["0"]) == {"shape", "color", "size", "label"}


def test_input_round_trip() -> None:
    srv, cli, _ = _joined()
    evs = [srv.receive(cli.input([0.5, -1.0]), 0.1)[0]]
    evs.append(srv.receive(cli.input({"dx": 0, "dy": 1, "a": 2, "g": -7}, client_tick=42, ack=499), 0.2)[0])
    evs.append(srv.receive(cli.input([1.0, 0.0, 255, 2**31 - 1, 0, 9, 2**32 - 1]), 0.3)[0])
    assert evs == [
        InputEvent(1, 500, (0.5, -1.0, 0, 0, 0, 0, 0), None),
        InputEvent(2, 42, (0.0, 1.0, 2, -7, 0, 0, 0), 499),
        InputEvent(3, 500, (1.0, 0.0, 255, 2**31 - 1, 0, 9, 2**32 - 1), None),
    ]
    assert all(type(e.values[0]) is float and type(e.values[1]) is float for e in evs if isinstance(e, InputEvent))
    assert srv.last_input_seq == 3 and srv.last_ack_tick == 499
    assert srv.data_to_send() == []


def test_snapshot_round_trip_zero_copy() -> None:
    srv, cli, w = _joined()
    recs = np.zeros(4, REC)
    recs["id"] = [1, 2, 3, 0x00100003]
    recs["x"] = [1.5, -2.0, 3.25, 0.0]
    recs["hp"] = [10, 20, 30, 65535]
    prep = SnapshotEncoder(REC).prepare(501, recs)
    srv.send_snapshot(prep, 17)
    frame = srv.data_to_send()[0]
    assert cli.peek_snapshot_tick(frame) == (501, 17)
    (snap,) = cli.receive(frame, 0.0)
    assert isinstance(snap, Snapshot)
    assert snap.tick == 501 and snap.ack_seq == 17
    assert snap.entities.dtype == w.dtype
    np.testing.assert_array_equal(snap.entities, recs)
    assert not snap.entities.flags.owndata  # a view over the frame's bytes
    assert cli.last_ack_seq == 17 and cli.last_tick == 501


def test_snapshot_with_zero_entities() -> None:
    srv, cli, _ = _joined()
    srv.send_snapshot(SnapshotEncoder(REC).prepare(502, np.zeros(0, REC)), 0)
    (snap,) = cli.receive(srv.data_to_send()[0], 0.0)
    assert isinstance(snap, Snapshot) and len(snap.entities) == 0


def test_events_ping_pong_error_bye_round_trip() -> None:
    srv, cli, _ = _joined()
    srv.send_events(510, [(1, 3, 0), (2, 1, 250), (np.int32(4), np.int64(2), 0)])  # type: ignore[list-item]
    (ev,) = srv.receive(cli.ping(10.0), 10.0)
    assert ev == PingEvent(10.0)
    srv.pong(ev.client_time, 123456.5, 510)
    srv.send_bye("server shutting down", CloseCode.GOING_AWAY)
    events, pong, bye = (cli.receive(f, 10.05)[0] for f in srv.data_to_send())
    assert events == Events(510, [(1, 3, 0), (2, 1, 250), (4, 2, 0)])
    assert isinstance(pong, Pong)
    assert pong.rtt == pytest.approx(0.05) and pong.server_time_ms == 123456.5 and pong.tick == 510
    assert cli.rtt == pytest.approx(0.05)
    assert bye == Bye("server shutting down") and cli.closed
    assert srv.close_code == CloseCode.GOING_AWAY
    (err,) = cli.receive(encode_error(ErrorCode.BAD_FIELD, "dx out of range"), 0.0)
    assert err == Error(3, "dx out of range")


def test_rtt_is_an_ewma() -> None:
    cli = ClientSession()
    cli.receive(encode_pong(0.0, 0.0, 0), 0.1)
    cli.receive(encode_pong(1.0, 0.0, 0), 1.9)
    assert cli.rtt == pytest.approx(0.1 + 0.125 * (0.9 - 0.1))


def test_client_seq_increases_from_one() -> None:
    _, cli, _ = _joined()
    seqs = [msgpack.unpackb(cli.input([0, 0]))["s"] for _ in range(3)]
    assert seqs == [1, 2, 3]


def test_plain_input_frame_is_small() -> None:
    _, cli, _ = _joined()
    frame = cli.input([0.5, 0.5])
    assert set(msgpack.unpackb(frame)) == {"t", "s", "ct", "dx", "dy"}  # integer fields at 0 are left out
    assert len(frame) <= 40


def test_welcome_is_plain_msgpack() -> None:
    m = msgpack.unpackb(encode_welcome(7, 1, 60, 20, "wander", {"k": np.float32(0.5)}, REC, ack_seq=9))  # type: ignore[dict-item]
    assert m == {
        "t": "welcome",
        "v": 1,
        "player": 7,
        "tick": 1,
        "tick_rate": 60,
        "send_rate": 20,
        "game": "wander",
        "world": {"k": 0.5},
        "dtype": dtype_to_wire(REC),
        "a": 9,
    }


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"t": "zzz"}),
        msgpack.packb({"t": "s", "k": 1, "a": 1, "e": b"\x00"}),  # body not a whole record
        msgpack.packb({"t": "ev", "k": 1, "ev": [[1, 2]]}),
        msgpack.packb({"t": "pong", "c": math.nan, "s": 0.0, "k": 0}),
        msgpack.packb({"t": "welcome", "v": 2}),
    ],
)
def test_client_raises_protocol_error_on_bad_server_frames(frame: bytes) -> None:
    _, cli, _ = _joined()
    with pytest.raises(ProtocolError):
        cli.receive(frame, 0.0)


def test_snapshot_before_welcome_is_refused_by_client() -> None:
    with pytest.raises(ProtocolError) as ei:
        ClientSession().receive(encode_snapshot(1, 0, b""), 0.0)
    assert ei.value.code is ErrorCode.NOT_READY


def test_events_and_bye_frames_are_plain_msgpack() -> None:
    assert msgpack.unpackb(encode_events(3, [(1, 2, 3)])) == {"t": "ev", "k": 3, "ev": [[1, 2, 3]]}
    assert msgpack.unpackb(encode_bye("kicked")) == {"t": "bye", "reason": "kicked"}
    assert len(encode_error(1, "x" * 10_000)) < 260  # capped: no amplification
