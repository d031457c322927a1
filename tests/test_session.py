"""ServerSession: validation at the boundary, offences, closing, rate limit, fuzz."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcode.protocol import CloseCode, ErrorCode, encode_hello
from netcode.session import InputEvent, PingEvent, ServerSession, SessionState
from sim.games.startales.game import Startales
from sim.spec import Input

REC = [["id", "<u4"], ["x", "<f4"]]
INPUTS = Startales.inputs  # dx, dy, a, g, g2, g3, tx


def _active(**kw: Any) -> ServerSession:
    s = ServerSession(inputs=INPUTS, **kw)
    assert s.receive(encode_hello("bob"), 0.0)
    s.accept(1, 0, 60, 20, "wander", {}, REC)
    s.data_to_send()
    return s


def _frames(s: ServerSession) -> list[dict[str, Any]]:
    return [msgpack.unpackb(f) for f in s.data_to_send()]


def _errors(s: ServerSession) -> list[int]:
    return [m["code"] for m in _frames(s) if m["t"] == "err"]


def _inp(**over: Any) -> bytes:
    m: dict[str, Any] = {"t": "in", "s": 1, "ct": 0, "dx": 0.0, "dy": 0.0}
    for k, v in over.items():
        if v is _DROP:
            del m[k]
        else:
            m[k] = v
    return msgpack.packb(m)


_DROP = object()


def test_fast_path_event_is_a_real_frozen_input_event() -> None:
    s = _active()
    (ev,) = s.receive(_inp(s=5, ct=6, dx=0.25, dy=-0.5), 0.0)
    assert type(ev) is InputEvent
    assert ev == InputEvent(5, 6, (0.25, -0.5, 0, 0, 0, 0, 0), None)
    assert hash(ev) == hash(InputEvent(5, 6, (0.25, -0.5, 0, 0, 0, 0, 0), None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.seq = 9  # type: ignore[misc]


def test_ints_are_accepted_for_floats() -> None:
    s = _active()
    (ev,) = s.receive(_inp(dx=1, dy=-1), 0.0)
    assert isinstance(ev, InputEvent) and ev.values[0] == 1.0 and type(ev.values[0]) is float


def test_absent_game_fields_are_their_default_and_unknown_keys_are_ignored() -> None:
    s = _active()
    (ev,) = s.receive(_inp(dy=_DROP, a=3, g=-7, g2=2, g3=250, tx=2**32 - 1, future=1), 0.0)
    assert isinstance(ev, InputEvent)
    assert ev.values == (0.0, 0.0, 3, -7, 2, 250, 2**32 - 1)
    (ev,) = s.receive(msgpack.packb({"t": "in", "s": 2, "ct": 0}), 0.0)
    assert isinstance(ev, InputEvent)
    assert ev.values == (0.0, 0.0, 0, 0, 0, 0, 0)
    assert s.offences == 0


def test_each_game_checks_its_own_fields() -> None:
    s = ServerSession(inputs=(Input("power", "f32", 0.0, 2.0), Input("mode", "u32", 1, 3)))
    s.receive(encode_hello("bob"), 0.0)
    s.accept(1, 0, 60, 20, "g", {}, REC)
    (ev,) = s.receive(msgpack.packb({"t": "in", "s": 1, "ct": 0, "power": 1.5, "dx": 9.0}), 0.0)
    assert isinstance(ev, InputEvent)
    assert ev.values == (1.5, 1)  # "mode" absent: its lowest legal value; "dx" is not this game's
    for bad in ({"power": 2.5}, {"power": -0.1}, {"mode": 0}, {"mode": 4}, {"mode": 1.0}):
        assert s.receive(msgpack.packb({"t": "in", "s": 2, "ct": 0, **bad}), 0.0) == []
    assert s.offences == 5


BAD_FRAMES: list[tuple[str, bytes | str, ErrorCode]] = [
    ("not msgpack", b"\xc1\xc1", ErrorCode.MALFORMED),
    ("truncated", b"\x85\xa1t", ErrorCode.MALFORMED),
    ("trailing bytes", msgpack.packb({"t": "ping", "c": 1.0}) + b"\x00", ErrorCode.MALFORMED),
    ("text frame", '{"t":"in"}', ErrorCode.MALFORMED),
    ("not a map", msgpack.packb([1, 2, 3]), ErrorCode.MALFORMED),
    ("nil", msgpack.packb(None), ErrorCode.MALFORMED),
    ("missing t", msgpack.packb({"s": 1}), ErrorCode.MALFORMED),
    ("t not str", msgpack.packb({"t": 1}), ErrorCode.MALFORMED),
    ("int keys", msgpack.packb({1: 2}), ErrorCode.MALFORMED),
    ("unknown type", msgpack.packb({"t": "teleport"}), ErrorCode.UNKNOWN_TYPE),
    ("server type from client", msgpack.packb({"t": "welcome"}), ErrorCode.UNKNOWN_TYPE),
    ("bool as int seq", _inp(s=True), ErrorCode.BAD_FIELD),
    ("bool as float dx", _inp(dx=False), ErrorCode.BAD_FIELD),
    ("str as float", _inp(dx="0.5"), ErrorCode.BAD_FIELD),
    ("float as int seq", _inp(s=1.0), ErrorCode.BAD_FIELD),
    ("nil dy", _inp(dy=None), ErrorCode.BAD_FIELD),
    ("NaN", _inp(dx=math.nan), ErrorCode.BAD_FIELD),
    ("+inf", _inp(dy=math.inf), ErrorCode.BAD_FIELD),
    ("-inf", _inp(dx=-math.inf), ErrorCode.BAD_FIELD),
    ("dx out of range", _inp(dx=1.0001), ErrorCode.BAD_FIELD),
    ("dy out of range", _inp(dy=-2), ErrorCode.BAD_FIELD),
    ("seq negative", _inp(s=-1), ErrorCode.BAD_FIELD),
    ("seq too big", _inp(s=2**32), ErrorCode.BAD_FIELD),
    ("ct too big", _inp(ct=2**64 - 1), ErrorCode.BAD_FIELD),
    ("missing seq", _inp(s=_DROP), ErrorCode.BAD_FIELD),
    ("action too big", _inp(a=256), ErrorCode.BAD_FIELD),
    ("action negative", _inp(a=-1), ErrorCode.BAD_FIELD),
    ("action bool", _inp(a=True), ErrorCode.BAD_FIELD),
    ("arg beyond int32", _inp(g=2**31), ErrorCode.BAD_FIELD),
    ("ack negative", _inp(ack=-5), ErrorCode.BAD_FIELD),
    ("ack str", _inp(ack="1"), ErrorCode.BAD_FIELD),
    ("ping NaN", msgpack.packb({"t": "ping", "c": math.nan}), ErrorCode.BAD_FIELD),
    ("ping missing c", msgpack.packb({"t": "ping"}), ErrorCode.BAD_FIELD),
    ("oversized", _inp(pad="x" * 5000), ErrorCode.TOO_LARGE),
    ("duplicate hello", encode_hello("bob"), ErrorCode.DUPLICATE_HELLO),
]


@pytest.mark.parametrize(("label", "frame", "code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_get_the_documented_error(label: str, frame: bytes | str, code: ErrorCode) -> None:
    s = _active()
    assert s.receive(frame, 0.0) == []
    assert _errors(s) == [code]
    assert s.offences == 1 and s.state is SessionState.ACTIVE
    # The session still works after one offence.
    assert s.receive(_inp(s=2), 0.0)


def test_oversized_bytearray_and_custom_max_frame() -> None:
    s = _active(max_frame=64)
    assert s.receive(bytearray(_inp(pad="x" * 100)), 0.0) == []
    assert _errors(s) == [ErrorCode.TOO_LARGE]
    assert s.receive(memoryview(_inp()), 0.0)  # other bytes-likes are accepted


def test_input_before_hello_and_before_accept_is_not_ready() -> None:
    s = ServerSession()
    assert s.receive(_inp(), 0.0) == []
    assert _errors(s) == [ErrorCode.NOT_READY]
    assert s.receive(encode_hello("bob"), 0.0)
    assert s.receive(_inp(), 0.0) == []  # hello seen, welcome not yet sent
    assert _errors(s) == [ErrorCode.NOT_READY]


@pytest.mark.parametrize(
    ("hello", "ok"),
    [
        ({"name": "bob"}, True),  # token optional
        ({"name": "b" * 32, "token": "x" * 4096}, True),
        ({"name": ""}, False),
        ({"name": "b" * 33}, False),
        ({"name": "bo\nb"}, False),
        ({"name": "bob", "token": "x" * 4097}, False),
        ({"name": "bob", "token": "é" * 2049}, False),  # 4098 bytes in UTF-8
        ({"name": "bob", "token": 5}, False),
        ({"name": 5}, False),
        ({}, False),
    ],
)
def test_hello_fields(hello: dict[str, Any], ok: bool) -> None:
    s = ServerSession()
    evs = s.receive(msgpack.packb({"t": "hello", "v": 1, **hello}), 0.0)
    if ok:
        assert len(evs) == 1 and _errors(s) == []
    else:
        assert evs == [] and _errors(s) == [ErrorCode.BAD_FIELD]


@pytest.mark.parametrize("v", [0, 2, 999])
def test_version_mismatch_closes_with_4003(v: int) -> None:
    s = ServerSession()
    assert s.receive(msgpack.packb({"t": "hello", "v": v, "future_field": [1]}), 0.0) == []
    frames = _frames(s)
    assert [f["t"] for f in frames] == ["err", "bye"]
    assert frames[0]["code"] == ErrorCode.VERSION_MISMATCH
    assert s.state is SessionState.CLOSING and s.close_code == CloseCode.VERSION_MISMATCH
    assert s.receive(encode_hello("bob"), 0.0) == []  # nothing after closing
    assert s.data_to_send() == []


def test_hello_version_bool_is_bad_field() -> None:
    s = ServerSession()
    s.receive(msgpack.packb({"t": "hello", "v": True, "name": "x"}), 0.0)
    assert _errors(s) == [ErrorCode.BAD_FIELD]


def test_max_offences_closes_with_4000_and_bye() -> None:
    s = _active(max_offences=3)
    for _ in range(2):
        s.receive(b"\xc1", 0.0)
    assert s.state is SessionState.ACTIVE and s.close_code is None
    s.receive(_inp(dx=math.nan), 0.0)
    frames = _frames(s)
    assert [f["t"] for f in frames] == ["err", "err", "err", "bye"]
    assert s.state is SessionState.CLOSING
    assert s.close_code == CloseCode.PROTOCOL_VIOLATION == 4000
    assert s.close_reason
    # Once closing, nothing more is decoded or answered.
    assert s.receive(_inp(), 0.0) == [] and s.data_to_send() == []
    s.connection_lost()
    assert s.state is SessionState.CLOSED


def test_default_max_offences_is_five() -> None:
    s = _active()
    for _ in range(4):
        s.receive(b"\xc1", 0.0)
    assert s.state is SessionState.ACTIVE
    s.receive(b"\xc1", 0.0)
    assert s.close_code == 4000


def test_rate_limit_with_injected_clock() -> None:
    s = _active(rate=10.0, burst=5.0)
    accepted = sum(len(s.receive(_inp(s=i + 1), 100.0)) for i in range(8))
    assert accepted == 5  # the burst
    assert _errors(s) == [ErrorCode.RATE_LIMITED]  # one error frame for the three dropped frames
    assert s.dropped == 3 and s.offences == 1
    # 0.5 s later: 5 tokens back at 10/s, but still within a second of the last error frame.
    assert sum(len(s.receive(_inp(s=i + 10), 100.5)) for i in range(6)) == 5
    assert _errors(s) == [] and s.offences == 1 and s.dropped == 4
    # More than a second after the last error frame: a new one, a new offence.
    s.receive(_inp(s=50), 101.2)  # 0.7 s * 10/s = 7 tokens, capped at burst 5
    assert _errors(s) == []
    for i in range(5):
        s.receive(_inp(s=60 + i), 101.2)
    assert _errors(s) == [ErrorCode.RATE_LIMITED] and s.offences == 2


def test_steady_rate_below_limit_is_never_limited() -> None:
    s = _active(rate=60.0, burst=10.0)
    for i in range(600):
        assert s.receive(_inp(s=i + 1), i / 59.0)
    assert s.dropped == 0 and s.data_to_send() == []


def test_rate_limit_flood_ends_in_close() -> None:
    s = _active(rate=10.0, burst=5.0)
    t = 0.0
    while s.state is SessionState.ACTIVE and t < 60:
        for _ in range(100):
            s.receive(_inp(), t)
        t += 1.0
    assert s.close_code == CloseCode.PROTOCOL_VIOLATION
    assert t <= 6.0


def test_ping_allowed_before_hello_and_pong_frame() -> None:
    s = ServerSession()
    (ev,) = s.receive(msgpack.packb({"t": "ping", "c": 3}), 0.0)
    assert ev == PingEvent(3.0)
    s.pong(ev.client_time, 42.0, 7)
    assert _frames(s) == [{"t": "pong", "c": 3.0, "s": 42.0, "k": 7}]


def test_accept_requires_hello() -> None:
    with pytest.raises(RuntimeError):
        ServerSession().accept(1, 0, 60, 20, "g", {}, REC)


def test_reject_server_full() -> None:
    s = ServerSession()
    s.receive(encode_hello("bob"), 0.0)
    s.reject(ErrorCode.SERVER_FULL, "server full", CloseCode.SERVER_FULL)
    frames = _frames(s)
    assert frames == [{"t": "err", "code": 7, "msg": "server full"}, {"t": "bye", "reason": "server full"}]
    assert s.state is SessionState.CLOSING and s.close_code == 4004


def test_handshake_timeout() -> None:
    s = ServerSession(handshake_timeout=5.0, opened_at=100.0)
    s.poll(104.9)
    assert s.state is SessionState.AWAIT_HELLO
    s.poll(105.1)
    assert s.close_code == CloseCode.HANDSHAKE_TIMEOUT
    assert [f["t"] for f in _frames(s)] == ["bye"]
    a = _active()
    a.poll(1e9)
    assert a.state is SessionState.ACTIVE


def test_kick_and_outbound_after_close_is_dropped() -> None:
    s = _active()
    s.send_bye("cheating", CloseCode.KICKED)
    s.send_events(1, [(1, 1, 1)])
    s.pong(0.0, 0.0, 0)
    assert _frames(s) == [{"t": "bye", "reason": "cheating"}]
    assert s.close_code == 4005


# ------------------------------------------------------------------ fuzz

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(["t", "s", "ct", "dx", "dy", "a", "g"]), children)
    ),
    max_leaves=8,
)
message_like = st.fixed_dictionaries(
    {"t": st.sampled_from(["in", "hello", "ping", "s", "x"])},
    optional={
        "s": msgpack_values,
        "ct": msgpack_values,
        "dx": msgpack_values,
        "dy": msgpack_values,
        "a": msgpack_values,
        "g": msgpack_values,
        "ack": msgpack_values,
        "v": st.integers(0, 2) | msgpack_values,
        "name": st.text(max_size=40) | msgpack_values,
        "token": msgpack_values,
        "c": msgpack_values,
    },
)


def _check_outbox(s: ServerSession) -> None:
    for f in s.data_to_send():
        m = msgpack.unpackb(f)
        assert m["t"] in ("err", "bye")
        if m["t"] == "err":
            assert m["code"] in set(ErrorCode)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.text(max_size=20), max_size=10))
def test_fuzz_random_bytes_never_raise(frames: list[bytes | str]) -> None:
    for s in (ServerSession(max_offences=1000, inputs=INPUTS), _active(max_offences=1000)):
        for i, f in enumerate(frames):
            s.receive(f, i * 0.01)
        _check_outbox(s)


@settings(max_examples=250, deadline=None)
@given(st.lists(msgpack_values | message_like, max_size=6))
def test_fuzz_random_msgpack_never_raise(objs: list[Any]) -> None:
    for s in (ServerSession(max_offences=1000, inputs=INPUTS), _active(max_offences=1000)):
        for i, o in enumerate(objs):
            for ev in s.receive(msgpack.packb(o), i * 0.01):
                if isinstance(ev, InputEvent):
                    # Whatever got through is within the documented ranges.
                    assert 0 <= ev.seq <= 2**32 - 1 and 0 <= ev.client_tick <= 2**32 - 1
                    dx, dy, action, arg = ev.values[:4]
                    assert -1.0 <= dx <= 1.0 and -1.0 <= dy <= 1.0
                    assert type(dx) is float and type(dy) is float
                    assert 0 <= action <= 255 and -(2**31) <= arg < 2**31
                elif isinstance(ev, PingEvent):
                    assert math.isfinite(ev.client_time)
        _check_outbox(s)


def test_deeply_nested_frame_is_malformed_not_a_crash() -> None:
    s = _active()
    s.receive(b"\x91" * 3000 + b"\xc0", 0.0)
    assert _errors(s) == [ErrorCode.MALFORMED]


def test_hello_frame_limit_is_wider_only_before_welcome() -> None:
    s = ServerSession()
    s.receive(msgpack.packb({"t": "hello", "v": 1, "name": "bob", "token": "x" * 5000}), 0.0)
    assert _errors(s) == [ErrorCode.TOO_LARGE]
    a = _active()
    a.receive(msgpack.packb({"t": "ping", "c": 1.0, "pad": "x" * 4200}), 0.0)
    assert _errors(a) == [ErrorCode.TOO_LARGE]
