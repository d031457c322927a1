"""Per-client server-side protocol state machine (Sans-I/O).

The transport feeds each inbound message to `receive(payload, now)` and writes whatever
`data_to_send()` returns; when `state` becomes CLOSING it closes the connection with
`close_code` / `close_reason` after flushing. The engine reacts to the returned events and calls
`accept` / `reject` / `pong` / `send_events` / `send_snapshot` / `send_bye`. No clock, no socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, make_dataclass
from enum import Enum
from typing import Any, Final

import msgpack
import numpy as np

from netcode.protocol import (
    MAX_FRAME,
    MAX_HELLO_FRAME,
    PROTOCOL_VERSION,
    T_HELLO,
    T_INPUT,
    T_PING,
    UINT32_MAX,
    UINT64_MAX,
    CloseCode,
    ErrorCode,
    PreparedSnapshot,
    ProtocolError,
    check_map,
    check_name,
    check_token,
    encode_bye,
    encode_error,
    encode_events,
    encode_pong,
    encode_welcome,
    opt_int,
    req_float,
    req_int,
    req_str,
    unpack_map,
)
from netcode.signaling import CLIENT_TYPES as SIGNAL_TYPES
from netcode.signaling import T_RTC_OFFER, SignalBudget, SignalEvent, parse_signal
from sim.spec import Input


class SessionState(Enum):
    AWAIT_HELLO = "await_hello"
    ACTIVE = "active"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HelloEvent:
    name: str
    token: str
    version: int
    watch: bool = False  # a spectator's hello ("watch": 1): no ship, the whole world (docs/web.md)


@dataclass(frozen=True, slots=True)
class InputEvent:
    seq: int
    client_tick: int
    values: tuple[float | int, ...]  # the game's input fields, in its spec's order (absent: default)
    ack: int | None  # newest snapshot tick the client holds; None when it did not say


@dataclass(frozen=True, slots=True)
class PingEvent:
    client_time: float


Event = HelloEvent | InputEvent | PingEvent | SignalEvent


def _fast_ctor(cls: type[InputEvent]) -> Callable[..., InputEvent]:
    # A frozen dataclass __init__ goes through object.__setattr__ once per field: ~1.5 µs for
    # InputEvent on the reference box, more than the msgpack decode itself. A mutable twin with
    # the very same slots is built at native speed and then re-classed; CPython allows __class__
    # assignment between classes of identical layout, and the result is an ordinary, frozen
    # InputEvent (same type, eq, hash, repr). ~0.5 µs. tests/test_session.py guards this.
    twin = make_dataclass(
        "_MutableInputEvent", [(f.name, f.type) for f in fields(cls)], slots=True, eq=False, repr=False
    )

    def make(seq: int, ct: int, values: tuple[float | int, ...], ack: int | None) -> InputEvent:
        ev = twin(seq, ct, values, ack)
        ev.__class__ = cls
        return ev

    return make


_new_input = _fast_ctor(InputEvent)

DEFAULT_MAX_OFFENCES: Final = 5
DEFAULT_RATE: Final = 120.0
DEFAULT_BURST: Final = 60.0
DEFAULT_HANDSHAKE_TIMEOUT: Final = 5.0
# One RATE_LIMITED frame per this many seconds at most: a flood must not be answered by a flood.
RATE_ERROR_INTERVAL: Final = 1.0

_unpackb = msgpack.unpackb
_UNDECODED: Final = object()  # sentinel: None is a valid msgpack value
_ABSENT: Final = object()

# One game input field as the session checks it: (key, is_float, lo, hi, default).
Field = tuple[str, bool, float, float, float | int]


def input_fields(inputs: Sequence[Input]) -> tuple[Field, ...]:
    """The session's view of a game's inputs (sim/spec.py `Input`)."""
    return tuple((i.key, i.type == "f32", i.lo, i.hi, i.default) for i in inputs)
_ACTIVE: Final = SessionState.ACTIVE
_CLOSING: Final = SessionState.CLOSING
_CLOSED: Final = SessionState.CLOSED


class ServerSession:
    """One client connection's protocol state. Not thread-safe; one per connection."""

    __slots__ = (
        "_fields",
        "_hello_seen",
        "_last_rate_error",
        "_out",
        "_tokens",
        "_tokens_at",
        "burst",
        "close_code",
        "close_reason",
        "dropped",
        "frames_in",
        "handshake_timeout",
        "hello",
        "last_ack_tick",
        "last_input_seq",
        "last_offence",
        "max_frame",
        "max_offences",
        "max_signal_frame",
        "offences",
        "opened_at",
        "player",
        "rate",
        "signal",
        "state",
    )

    def __init__(
        self,
        *,
        max_offences: int = DEFAULT_MAX_OFFENCES,
        max_frame: int = MAX_FRAME,
        rate: float = DEFAULT_RATE,
        burst: float = DEFAULT_BURST,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        opened_at: float = 0.0,
        max_signal_frame: int = 0,
        inputs: Sequence[Input] = (),
    ) -> None:
        """`inputs`: the game's input fields (their keys, types and legal ranges are checked here)."""
        self._fields = input_fields(inputs)
        self.max_offences = max_offences
        # WebRTC offers (netcode/signaling.py) may exceed max_frame; 0: no frame may.
        self.max_signal_frame = max_signal_frame
        self.signal = SignalBudget()
        self.max_frame = max_frame
        self.rate = rate
        self.burst = burst
        self.handshake_timeout = handshake_timeout
        self.opened_at = opened_at
        self.state = SessionState.AWAIT_HELLO
        self.close_code: int | None = None
        self.close_reason = ""
        self.offences = 0
        self.last_offence: ErrorCode | None = None  # the code of the newest offence (for fair play)
        self.frames_in = 0
        self.dropped = 0  # frames discarded by the rate limit
        self.hello: HelloEvent | None = None
        self.player: int | None = None
        self.last_input_seq = 0  # highest seq decoded (not necessarily applied by the sim)
        self.last_ack_tick: int | None = None
        self._hello_seen = False
        self._out: list[bytes] = []
        self._tokens = float(burst)
        self._tokens_at = opened_at
        self._last_rate_error = -1e300

    def bind_inputs(self, inputs: Sequence[Input]) -> None:
        """The game's input fields, once known: a host learns the campaign (so the game) at the hello."""
        self._fields = input_fields(inputs)

    # ------------------------------------------------------------------ inbound

    def receive(self, payload: bytes | bytearray | memoryview | str, now: float) -> list[Event]:
        """Decode one inbound message. Never raises on peer data: errors become `err` frames."""
        state = self.state
        if state is _CLOSING or state is _CLOSED:
            return []
        self.frames_in += 1

        # Token bucket: refill by elapsed time, capped at burst. A clock stepping backwards
        # (now < last) refills nothing rather than draining.
        elapsed = now - self._tokens_at
        tokens = self._tokens
        if elapsed > 0.0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            self.dropped += 1
            if now - self._last_rate_error >= RATE_ERROR_INTERVAL:
                self._last_rate_error = now
                self._offence(ErrorCode.RATE_LIMITED, f"more than {self.rate:g} messages/s")
            return []
        self._tokens = tokens - 1.0

        # Nearly all traffic is inputs from active clients: decoded once here, checked by `_input`.
        limit = self.max_frame if state is _ACTIVE else max(self.max_frame, MAX_HELLO_FRAME)
        decoded: object = _UNDECODED
        if type(payload) is bytes and len(payload) <= limit:
            try:
                decoded = _unpackb(payload)
            except Exception:  # hostile bytes: the checked path below classifies them
                decoded = _UNDECODED
            if state is _ACTIVE and type(decoded) is dict and decoded.get("t") == "in":
                try:
                    return [self._input(decoded)]
                except ProtocolError as err:
                    self._offence(err.code, err.msg)
                    return []

        try:
            if decoded is not _UNDECODED:
                m = check_map(decoded)
            else:
                if isinstance(payload, str):
                    raise ProtocolError(ErrorCode.MALFORMED, "text frame; binary msgpack expected")
                size = memoryview(payload).nbytes
                if size > limit and not (state is _ACTIVE and size <= self.max_signal_frame):
                    raise ProtocolError(ErrorCode.TOO_LARGE, f"frame larger than {limit} bytes")
                m = unpack_map(payload)
                if size > limit and m["t"] != T_RTC_OFFER:
                    raise ProtocolError(ErrorCode.TOO_LARGE, f"frame larger than {limit} bytes")
            t = m["t"]
            if t == T_INPUT:
                if state is not _ACTIVE:
                    raise ProtocolError(ErrorCode.NOT_READY, "input before welcome")
                return [self._input(m)]
            if t == T_PING:
                return [PingEvent(req_float(m, "c"))]
            if t == T_HELLO:
                return self._hello(m)
            if t in SIGNAL_TYPES:
                if state is not _ACTIVE:
                    raise ProtocolError(ErrorCode.NOT_READY, f"{t} before welcome")
                return [self.signal.check(parse_signal(m))]
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {t!r}")
        except ProtocolError as err:
            self._offence(err.code, err.msg)
            return []

    def _input(self, m: dict[str, Any]) -> InputEvent:
        seq = m.get("s")
        ct = m.get("ct")
        if type(seq) is not int or not 0 <= seq <= 0xFFFFFFFF:
            seq = req_int(m, "s", 0, UINT32_MAX)  # raises the precise error
        if type(ct) is not int or not 0 <= ct <= 0xFFFFFFFF:
            ct = req_int(m, "ct", 0, UINT32_MAX)
        values: list[float | int] = []
        for key, is_float, lo, hi, default in self._fields:
            v = m.get(key, _ABSENT)
            if v is _ABSENT:
                values.append(default)
            elif is_float:
                # NaN fails both comparisons; ±inf is outside every legal range (within float32).
                if type(v) is float and lo <= v <= hi:
                    values.append(v)
                else:
                    values.append(req_float(m, key, lo, hi))  # ints are widened, the rest refused
            elif type(v) is int and lo <= v <= hi:
                values.append(v)
            else:
                values.append(req_int(m, key, int(lo), int(hi)))
        ack = m.get("ack")
        if ack is not None:
            if type(ack) is not int or not 0 <= ack <= 0xFFFFFFFFFFFFFFFF:
                ack = req_int(m, "ack", 0, UINT64_MAX)
            last = self.last_ack_tick
            if last is None or ack > last:
                self.last_ack_tick = ack
        if seq > self.last_input_seq:
            self.last_input_seq = seq
        return _new_input(seq, ct, tuple(values), ack)

    def _hello(self, m: dict[str, Any]) -> list[Event]:
        if self._hello_seen:
            raise ProtocolError(ErrorCode.DUPLICATE_HELLO, "hello already received")
        # Version first: a future client's hello may carry different fields, and it deserves the
        # precise VERSION_MISMATCH rather than a BAD_FIELD about them.
        v = m.get("v")
        if type(v) is not int:
            raise ProtocolError(ErrorCode.BAD_FIELD, 'hello: "v" must be an int')
        if v != PROTOCOL_VERSION:
            self._out.append(
                encode_error(ErrorCode.VERSION_MISMATCH, f"server speaks v{PROTOCOL_VERSION}, client v{v}")
            )
            self._close(CloseCode.VERSION_MISMATCH, "version mismatch")
            return []
        name = check_name(req_str(m, "name"))
        token = check_token(req_str(m, "token")) if "token" in m else ""
        watch = opt_int(m, "watch", 0, 1, 0) == 1
        self._hello_seen = True
        ev = HelloEvent(name, token, v, watch)
        self.hello = ev
        return [ev]

    def _offence(self, code: ErrorCode, msg: str) -> None:
        self._out.append(encode_error(code, msg))
        self.last_offence = code
        self.offences += 1
        if self.offences >= self.max_offences:
            self._close(CloseCode.PROTOCOL_VIOLATION, "too many protocol errors")

    def _close(self, code: int, reason: str) -> None:
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            return
        self._out.append(encode_bye(reason))
        self.state = SessionState.CLOSING
        self.close_code = int(code)
        self.close_reason = reason

    # ------------------------------------------------------------------ time

    def poll(self, now: float) -> None:
        """Call periodically (e.g. once per tick) to enforce the handshake timeout."""
        if self.state is SessionState.AWAIT_HELLO and now - self.opened_at > self.handshake_timeout:
            self._close(CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")

    # ------------------------------------------------------------------ outbound

    def accept(
        self,
        player: int,
        tick: int,
        tick_rate: int,
        send_rate: int,
        game: str,
        world: Mapping[str, float | int | str],
        dtype: np.dtype | Sequence[Sequence[str]],
        rep: Mapping[str, Any] | None = None,
        spec: Mapping[str, Any] | None = None,
        ack_seq: int = 0,
    ) -> None:
        """Queue the welcome and go ACTIVE. Only valid after a HelloEvent."""
        if self.state is not SessionState.AWAIT_HELLO or not self._hello_seen:
            raise RuntimeError(f"accept() in state {self.state.name} (hello seen: {self._hello_seen})")
        self._out.append(encode_welcome(player, tick, tick_rate, send_rate, game, world, dtype, rep, spec, ack_seq))
        self.player = player
        self.state = SessionState.ACTIVE

    def reject(self, code: ErrorCode | int, msg: str, close_code: CloseCode | int) -> None:
        """Queue an error and a bye, then close (e.g. SERVER_FULL / 4004)."""
        if self.state is SessionState.CLOSING or self.state is SessionState.CLOSED:
            return
        self._out.append(encode_error(code, msg))
        self._close(close_code, msg)

    def notify(self, code: ErrorCode | int, msg: str) -> None:
        """Queue an `err` frame that does not end the session (e.g. a fair-play warning)."""
        if self.state is SessionState.ACTIVE or self.state is SessionState.AWAIT_HELLO:
            self._out.append(encode_error(code, msg))

    def send_events(self, tick: int, events: Iterable[Sequence[int]]) -> None:
        if self.state is SessionState.ACTIVE:
            self._out.append(encode_events(tick, events))

    def send_snapshot(self, prepared: PreparedSnapshot, ack_seq: int) -> None:
        """Queue one client's snapshot built from the send's shared PreparedSnapshot."""
        if self.state is SessionState.ACTIVE:
            self._out.append(prepared.frame(ack_seq))

    def pong(self, client_time: float, server_time_ms: float, tick: int) -> None:
        if self.state is SessionState.AWAIT_HELLO or self.state is SessionState.ACTIVE:
            self._out.append(encode_pong(client_time, server_time_ms, tick))

    def send_bye(self, reason: str, close_code: CloseCode | int = CloseCode.NORMAL) -> None:
        """Queue a bye and go CLOSING (shutdown: GOING_AWAY; kick: KICKED; backlog: TOO_SLOW)."""
        self._close(close_code, reason)

    def data_to_send(self) -> list[bytes]:
        """Drain the outbox: frames to write, in order, each one binary WebSocket message."""
        out = self._out
        if not out:
            return []
        self._out = []
        return out

    def connection_lost(self) -> None:
        """The transport reports the connection is gone; the session is finished."""
        self.state = SessionState.CLOSED
        self._out = []
