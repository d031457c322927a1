"""Client-side protocol state machine (Sans-I/O), used by the Python SDK and the bots.

The caller sends the bytes returned by `hello` / `input` / `ping` and feeds every received
message to `receive(payload, now)`. Frames from the server that violate the protocol raise
`ProtocolError`: a client has no one to report them to, and silently ignoring a broken server
would hide bugs.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np

from netcode.protocol import (
    PROTOCOL_VERSION,
    T_BYE,
    T_DELTA,
    T_ERROR,
    T_EVENTS,
    T_PONG,
    T_SNAPSHOT,
    T_SPECTATOR_INFO,
    T_WELCOME,
    UINT32_MAX,
    UINT64_MAX,
    ErrorCode,
    ProtocolError,
    dtype_from_wire,
    encode_hello,
    encode_input,
    encode_ping,
    pack_uint,
    peek_snapshot_header,
    req_float,
    req_int,
    req_str,
    unpack_map,
)
from netcode.replication.decoder import ReplicationDecoder
from netcode.replication.frames import decode_delta_frame
from netcode.replication.schema import schema_from_wire
from netcode.signaling import SERVER_TYPES as SIGNAL_TYPES
from netcode.signaling import ServerSignal, parse_server_signal


@dataclass(frozen=True, slots=True)
class Welcome:
    player: int
    tick: int
    tick_rate: int
    send_rate: int
    game: str
    world: dict[str, float | int | str]
    dtype: np.dtype
    spec: dict[str, Any]  # the game's declaration for clients (docs/protocol.md "spec"); {} if absent
    ack_seq: int = 0  # newest input of this ship the server had applied (a resumed ship's earlier inputs)


@dataclass(frozen=True, slots=True)
class Snapshot:
    tick: int
    ack_seq: int  # newest of this client's inputs the server had processed
    entities: np.ndarray  # read-only view over the frame's bytes, dtype = welcome.dtype


@dataclass(frozen=True, slots=True)
class Events:
    tick: int
    events: list[tuple[int, int, int]]  # (kind, a, b)


@dataclass(frozen=True, slots=True)
class Error:
    code: int  # an ErrorCode value when known
    msg: str


@dataclass(frozen=True, slots=True)
class Pong:
    rtt: float  # this sample, in the caller's time unit (seconds when `now` is seconds)
    server_time_ms: float
    tick: int


@dataclass(frozen=True, slots=True)
class Bye:
    reason: str


@dataclass(frozen=True, slots=True)
class Info:
    figures: dict[str, Any]  # a spectator's once-a-second `st` frame (docs/web.md)


ClientEvent = Welcome | Snapshot | Events | Error | Pong | Bye | Info | ServerSignal

_F32: Final = struct.Struct(">f")
# Game input fields as the client encodes them: (key, the msgpack key [+ float32 marker], is_float).
_Field = tuple[str, bytes, bool]


def fields_from_spec(spec: Mapping[str, Any]) -> list[_Field]:
    """The input fields of a welcome's spec, ready for `encode_fields`."""
    out: list[_Field] = []
    for f in spec.get("inputs", []):
        ok = isinstance(f, list | tuple) and len(f) == 4 and isinstance(f[0], str)
        if not ok or f[1] not in ("f32", "i32", "u32"):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"bad input field in spec: {f!r}"[:200])
        out.append((f[0], msgpack.packb(f[0]) + (b"\xca" if f[1] == "f32" else b""), f[1] == "f32"))
    return out


def encode_fields(
    seq: int, ct: int, fields: Sequence[_Field], values: Mapping[str, float | int], ack: int | None
) -> bytes | None:
    """`encode_input(seq, ct, values, ack)` byte for byte for the fields of a spec, built by hand
    (about half the cost of packing a dict: a client sends this 20-60 times a second). Float fields
    are always sent (as float32), integer fields only when not 0. None when a value does not have
    the plain shape (non-int counters, a float beyond float32, a negative integer): use
    `encode_input`."""
    if type(seq) is not int or type(ct) is not int or not (0 <= seq <= UINT32_MAX and 0 <= ct <= UINT32_MAX):
        return None
    parts = [b"", pack_uint(seq), b"\xa2ct", pack_uint(ct)]
    append = parts.append
    n = 3
    for key, prefix, is_float in fields:
        v = values.get(key, 0)
        if is_float:
            tv = type(v)
            if tv is not float and tv is not int:
                return None
            try:
                append(prefix + _F32.pack(v))  # prefix: the key and the float32 marker
            except OverflowError:
                return None
            n += 1
        elif v:
            if type(v) is not int or v < 0:
                return None
            append(prefix + pack_uint(v))
            n += 1
    if ack is not None:
        if type(ack) is not int or not 0 <= ack <= UINT64_MAX:
            return None
        append(b"\xa3ack" + pack_uint(ack))
        n += 1
    if n > 15:
        return None
    parts[0] = _HEADS[n]
    return b"".join(parts)


_HEADS: Final = [bytes((0x80 | n,)) + b"\xa1t\xa2in\xa1s" for n in range(16)]  # fixmap(n), "t": "in", "s"


# Same smoothing as TCP's SRTT (RFC 6298): steady, yet follows a real change within ~10 samples.
RTT_ALPHA: Final = 0.125


class ClientSession:
    __slots__ = (
        "closed",
        "decoder",
        "dtype",
        "fields",
        "input_keys",
        "last_ack_seq",
        "last_tick",
        "move_keys",
        "rtt",
        "seq",
        "welcome",
    )

    def __init__(self) -> None:
        self.seq = 0  # last input seq sent; the first input carries 1
        self.welcome: Welcome | None = None
        self.dtype: np.dtype | None = None
        self.last_tick = 0  # newest server tick seen in a welcome or snapshot
        self.last_ack_seq = 0  # newest input seq the server reported processed
        self.rtt: float | None = None  # EWMA of ping round trips
        self.closed = False
        self.decoder: ReplicationDecoder | None = None  # set when the welcome announces delta snapshots
        self.fields: list[_Field] = []  # the game's input fields, from the welcome's spec
        self.input_keys: tuple[str, ...] = ()  # their wire keys, in spec order
        self.move_keys: frozenset[str] = frozenset()  # the fields of the spec's move binding

    # ------------------------------------------------------------------ outbound

    def hello(self, name: str, token: str = "", watch: bool = False) -> bytes:
        return encode_hello(name, token, watch=watch)

    def input(
        self,
        values: Mapping[str, float | int] | Sequence[float | int] = (),
        client_tick: int | None = None,
        ack: int | None = None,
    ) -> bytes:
        """Encode the next input: the game's `values` by wire key, or in the order of the welcome's
        spec. `client_tick` defaults to the newest server tick seen (the server checks that this
        clock does not run ahead of real time: docs/fairplay.md)."""
        # Never at or below what the server has applied: a client resuming a ship whose inputs came
        # from an earlier connection (another process, a lost session) continues after them.
        self.seq = seq = (max(self.seq, self.last_ack_seq) + 1) & UINT32_MAX
        ct = self.last_tick & UINT32_MAX if client_tick is None else client_tick
        if ack is None and self.decoder is not None and self.decoder.ack:
            ack = self.decoder.ack  # the newest delta snapshot we hold: the server's next baseline
        if type(values) is not dict and not isinstance(values, Mapping):  # (the ABC check is slow)
            if len(values) > len(self.fields):
                raise ValueError(f"{len(values)} input values for {len(self.fields)} fields")
            values = {f[0]: v for f, v in zip(self.fields, values, strict=False)}
        fast = encode_fields(seq, ct, self.fields, values, ack)
        if fast is not None:
            return fast
        plain: dict[str, float | int] = {}
        for key, _, is_float in self.fields:
            v = values.get(key, 0)
            if is_float:
                plain[key] = float(v)
            elif v:
                plain[key] = int(v)
        return encode_input(seq, ct, plain, ack)

    def ping(self, now: float) -> bytes:
        return encode_ping(now)

    # ------------------------------------------------------------------ inbound

    def peek_snapshot_tick(self, payload: bytes | bytearray | memoryview) -> tuple[int, int] | None:
        """(tick, ack_seq) of a snapshot without decoding its entities; None if not a snapshot.

        Updates `last_tick` / `last_ack_seq` like a full receive would.
        """
        hdr = peek_snapshot_header(payload)
        if hdr is not None:
            tick, ack = hdr
            if tick > self.last_tick:
                self.last_tick = tick
            if ack > self.last_ack_seq:
                self.last_ack_seq = ack
        return hdr

    def receive(self, payload: bytes | bytearray | memoryview | str, now: float) -> list[ClientEvent]:
        m = unpack_map(payload)
        t = m["t"]
        if t == T_SNAPSHOT:
            return [self._snapshot(m)]
        if t == T_DELTA:
            return self._delta(payload)
        if t == T_EVENTS:
            return [_events(m)]
        if t == T_PONG:
            return [self._pong(m, now)]
        if t == T_WELCOME:
            return [self._welcome(m)]
        if t == T_ERROR:
            return [Error(req_int(m, "code", -(2**63), UINT64_MAX), req_str(m, "msg"))]
        if t == T_BYE:
            self.closed = True
            return [Bye(req_str(m, "reason"))]
        if t == T_SPECTATOR_INFO:
            return [Info(m)]
        if t in SIGNAL_TYPES:
            return [parse_server_signal(m)]
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {t!r}")

    def _snapshot(self, m: dict[str, Any]) -> Snapshot:
        if self.dtype is None:
            raise ProtocolError(ErrorCode.NOT_READY, "snapshot before welcome")
        tick = req_int(m, "k", 0, UINT64_MAX)
        ack = req_int(m, "a", 0, UINT32_MAX)
        body = m.get("e")
        if type(body) is not bytes:
            raise ProtocolError(ErrorCode.BAD_FIELD, '"e" must be bin')
        if len(body) % self.dtype.itemsize:
            raise ProtocolError(ErrorCode.BAD_FIELD, "entity body is not a whole number of records")
        if tick > self.last_tick:
            self.last_tick = tick
        if ack > self.last_ack_seq:
            self.last_ack_seq = ack
        return Snapshot(tick, ack, np.frombuffer(body, dtype=self.dtype))

    def _delta(self, payload: bytes | bytearray | memoryview | str) -> list[ClientEvent]:
        dec = self.decoder
        if dec is None or self.dtype is None:
            raise ProtocolError(ErrorCode.NOT_READY, "delta snapshot before a welcome announcing them")
        if isinstance(payload, str):
            raise ProtocolError(ErrorCode.MALFORMED, "delta snapshots are binary")
        try:
            fr = decode_delta_frame(payload)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FIELD, str(exc)) from exc
        if not dec.apply(fr.tick, fr.baseline, fr.body):
            return []  # baseline unknown (a lost or stale frame): the next delta repairs us
        if fr.tick > self.last_tick:
            self.last_tick = fr.tick
        if fr.ack_seq > self.last_ack_seq:
            self.last_ack_seq = fr.ack_seq
        if fr.tick != dec.tick:
            return []  # an older snapshot arriving late: kept as a baseline, not shown
        return [Snapshot(fr.tick, fr.ack_seq, dec.records(self.dtype))]

    def _pong(self, m: dict[str, Any], now: float) -> Pong:
        c = req_float(m, "c")
        sample = now - c
        self.rtt = sample if self.rtt is None else self.rtt + RTT_ALPHA * (sample - self.rtt)
        return Pong(sample, req_float(m, "s"), req_int(m, "k", 0, UINT64_MAX))

    def _welcome(self, m: dict[str, Any]) -> Welcome:
        v = req_int(m, "v", 0, UINT64_MAX)
        if v != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.VERSION_MISMATCH, f"server speaks v{v}, client v{PROTOCOL_VERSION}")
        world = m.get("world")
        if type(world) is not dict:
            raise ProtocolError(ErrorCode.BAD_FIELD, '"world" must be a map')
        dtype = dtype_from_wire(m.get("dtype"))
        spec = m.get("spec", {})
        if type(spec) is not dict:
            raise ProtocolError(ErrorCode.BAD_FIELD, '"spec" must be a map')
        self.fields = fields_from_spec(spec)
        self.input_keys = tuple(f[0] for f in self.fields)
        move = spec.get("move")
        keys = move.get("in") if type(move) is dict else None
        self.move_keys = frozenset(k for k in keys if type(k) is str) if type(keys) is list else frozenset()
        w = Welcome(
            player=req_int(m, "player", 0, UINT32_MAX),
            tick=req_int(m, "tick", 0, UINT64_MAX),
            tick_rate=req_int(m, "tick_rate", 1, 100_000),
            send_rate=req_int(m, "send_rate", 1, 100_000),
            game=req_str(m, "game"),
            world=world,
            dtype=dtype,
            spec=spec,
            ack_seq=req_int(m, "a", 0, UINT32_MAX) if "a" in m else 0,
        )
        self.welcome = w
        self.dtype = dtype
        rep = m.get("rep")
        if rep is not None:
            if type(rep) is not dict or rep.get("mode") != "delta":
                raise ProtocolError(ErrorCode.BAD_FIELD, '"rep" must announce mode "delta"')
            try:
                self.decoder = ReplicationDecoder(schema_from_wire(rep.get("schema")))
            except ValueError as exc:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"bad replication schema: {exc}") from exc
        self.last_tick = max(self.last_tick, w.tick)
        self.last_ack_seq = max(self.last_ack_seq, w.ack_seq)  # the next input continues after it
        return w


def _events(m: dict[str, Any]) -> Events:
    tick = req_int(m, "k", 0, UINT64_MAX)
    raw = m.get("ev")
    if type(raw) is not list:
        raise ProtocolError(ErrorCode.BAD_FIELD, '"ev" must be an array')
    out: list[tuple[int, int, int]] = []
    for e in raw:
        if type(e) is not list or len(e) != 3 or not all(type(x) is int for x in e):
            raise ProtocolError(ErrorCode.BAD_FIELD, "event must be [kind, a, b] ints")
        out.append((e[0], e[1], e[2]))
    return Events(tick, out)
