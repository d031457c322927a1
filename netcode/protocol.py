"""Arbiter wire protocol, version 1: message schema, encoders and the shared snapshot encoder.

Every frame is one WebSocket binary message holding one msgpack map with a short type key "t".
`docs/protocol.md` is the normative description; this module is the reference implementation.

Sans-I/O: nothing here touches sockets, tasks or clocks.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import Any, Final

import msgpack
import numpy as np

PROTOCOL_VERSION: Final = 1

# Inputs are ~30 bytes and a hello is bounded by its token; anything bigger is abuse.
MAX_FRAME: Final = 4096
MAX_TOKEN_BYTES: Final = 4096
MAX_NAME_CHARS: Final = 32
# Room for a hello with the longest token: the only frame accepted before the welcome that can
# legitimately exceed MAX_FRAME. Transports must set max_size at least this high.
MAX_HELLO_FRAME: Final = MAX_TOKEN_BYTES + 512
UINT32_MAX: Final = 0xFFFFFFFF
UINT64_MAX: Final = 0xFFFFFFFFFFFFFFFF
# Error messages are built from client data on the error path; cap them so an error frame
# can never be much larger than a fixed-size reply (no amplification).
MAX_ERROR_MSG: Final = 200
# A record dtype wider than this is certainly a bug or an attack on the client.
MAX_DTYPE_FIELDS: Final = 256
MAX_FIELD_NAME: Final = 64


class ErrorCode(IntEnum):
    """The "code" of an `err` frame."""

    MALFORMED = 1  # not msgpack, not a map, no "t"
    UNKNOWN_TYPE = 2
    BAD_FIELD = 3  # wrong type, missing field, out of range, non-finite
    NOT_READY = 4  # input before the handshake completed
    DUPLICATE_HELLO = 5
    VERSION_MISMATCH = 6
    SERVER_FULL = 7
    TOO_LARGE = 8
    RATE_LIMITED = 9
    # 10-18: join-token refusals (engine/security/auth.py AuthCode)
    WARNED = 20  # fair play: inputs were refused as violations; the connection stays open
    BANNED = 21  # the account or address is banned (the message says until when)
    CONNECTION_REFUSED = 22  # too many connections from this address
    ACCOUNT_IN_USE = 23  # the account already plays here and the server refuses a second connection
    RTC_UNAVAILABLE = 24  # WebRTC signaling while the server runs no relay workers (or none is up)
    RTC_BAD_SIGNAL = 25  # a malformed offer or candidate (netcode/signaling.py)
    RTC_LIMIT = 26  # too many offers, candidates or blocks
    UNKNOWN_CAMPAIGN = 27  # a host does not run the campaign the hello (path or token) names


class CloseCode(IntEnum):
    """WebSocket close codes used by Arbiter (4000-4999 is the application range of RFC 6455)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutdown
    TOO_BIG = 1009  # sent by websockets itself when a frame passes max_size
    PROTOCOL_VIOLATION = 4000  # too many offences
    TOO_SLOW = 4001  # write backlog: the client does not read its snapshots
    HANDSHAKE_TIMEOUT = 4002
    VERSION_MISMATCH = 4003
    SERVER_FULL = 4004
    KICKED = 4005
    UNAUTHORIZED = 4006  # the hello's join token was refused (see docs/auth.md for the error codes)
    BANNED = 4007  # banned (at hello, or kicked by a ban)
    TOO_MANY_CONNECTIONS = 4008  # connection flood from one address
    REPLACED = 4009  # a newer connection of the same account took this one's ship over
    ACCOUNT_IN_USE = 4010  # refused: the account already plays here (account_conflict = "refuse")
    UNKNOWN_CAMPAIGN = 4011  # the host runs no such campaign (engine/host.py)


class ProtocolError(Exception):
    """A frame that violates the protocol; carries the error code to report to the peer."""

    def __init__(self, code: ErrorCode, msg: str) -> None:
        super().__init__(f"{code.name}: {msg}")
        self.code = code
        self.msg = msg[:MAX_ERROR_MSG]


# Type keys ("t") of every message.
T_HELLO: Final = "hello"
T_WELCOME: Final = "welcome"
T_INPUT: Final = "in"
T_SNAPSHOT: Final = "s"
T_DELTA: Final = "d"  # quantized delta snapshot (docs/replication.md)
T_EVENTS: Final = "ev"
T_ERROR: Final = "err"
T_PING: Final = "ping"
T_PONG: Final = "pong"
T_BYE: Final = "bye"
# A bye with this reason: the campaign goes on (after a drain, on another server or this one
# restarted); the client should reconnect, to the same URL or where the hub says (docs/protocol.md).
BYE_RELOCATE: Final = "relocate"
T_SPECTATOR_INFO: Final = "st"  # spectators' figures, once a second (docs/web.md)

# The event kind every game shares for a refused input (a game names all its kinds in the
# welcome's spec; sim/events.py).
EV_REFUSED: Final = 3

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def unpack_map(payload: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Decode one frame into its map, or raise ProtocolError(MALFORMED).

    Everything msgpack can throw on hostile bytes (ExtraData, StackError, UnicodeDecodeError,
    ValueError for non-str map keys, ...) is folded into MALFORMED: a peer learns nothing more.
    """
    if isinstance(payload, str):
        raise ProtocolError(ErrorCode.MALFORMED, "text frame; binary msgpack expected")
    try:
        m = _unpackb(payload)
    except Exception as exc:  # hostile bytes can trigger any of msgpack's exception types
        raise ProtocolError(ErrorCode.MALFORMED, f"not msgpack: {type(exc).__name__}") from None
    return check_map(m)


def check_map(m: object) -> dict[str, Any]:
    """`m` (a decoded frame) as a message map, or ProtocolError(MALFORMED)."""
    if type(m) is not dict:
        raise ProtocolError(ErrorCode.MALFORMED, "frame is not a map")
    t = m.get("t")
    if type(t) is not str:
        raise ProtocolError(ErrorCode.MALFORMED, 'missing or non-string "t"')
    return m


# --------------------------------------------------------------------------- field checks
# msgpack only ever produces exact builtin types, so `type(x) is int` is both the fast check and
# the one that refuses bool (a subclass of int) without a second test.


def req_int(m: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = m.get(key)
    if type(v) is not int:
        raise ProtocolError(ErrorCode.BAD_FIELD, _type_msg(key, "int", v))
    if not lo <= v <= hi:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{key} out of range [{lo}, {hi}]")
    return v


def opt_int(m: Mapping[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    if key not in m:
        return default
    return req_int(m, key, lo, hi)


def req_float(m: Mapping[str, Any], key: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite float (ints accepted and widened) within [lo, hi]."""
    v: Any = m.get(key)
    tv = type(v)
    if tv is float:
        f: float = v
    elif tv is int:
        f = float(v)
    else:
        raise ProtocolError(ErrorCode.BAD_FIELD, _type_msg(key, "float", v))
    # NaN fails every comparison, so the range test refuses it; inf is refused explicitly because
    # an unbounded range would let it through.
    if not (lo <= f <= hi) or f - f != 0.0:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{key} must be finite and within [{lo}, {hi}]")
    return f


def req_str(m: Mapping[str, Any], key: str) -> str:
    v = m.get(key)
    if type(v) is not str:
        raise ProtocolError(ErrorCode.BAD_FIELD, _type_msg(key, "str", v))
    return v


def _type_msg(key: str, want: str, got: object) -> str:
    if got is None:
        return f"{key}: missing or nil, {want} expected"
    return f"{key}: {want} expected, got {type(got).__name__}"


def check_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ProtocolError(ErrorCode.BAD_FIELD, f"name must be 1..{MAX_NAME_CHARS} printable characters")
    return name


def check_token(token: str) -> str:
    # Character count bounds the encoded size from below only; the byte check is the real limit.
    if len(token) > MAX_TOKEN_BYTES or len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"token longer than {MAX_TOKEN_BYTES} bytes")
    return token


# --------------------------------------------------------------------------- encoders


def encode_hello(name: str, token: str = "", version: int = PROTOCOL_VERSION, watch: bool = False) -> bytes:
    """`watch`: ask to spectate (no ship, the whole world; docs/web.md)."""
    m: dict[str, Any] = {"t": T_HELLO, "v": version, "token": token, "name": name}
    if watch:
        m["watch"] = 1
    out: bytes = _packb(m)
    return out


def encode_welcome(
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
) -> bytes:
    """`rep` (optional) announces delta snapshots: {"mode": "delta", "schema": ..., "aoi": radius};
    `spec` is the game's declaration for clients (inputs, move, events, draw hints; docs/protocol.md);
    `ack_seq` is the newest input seq the ship has had processed (a resumed ship's earlier inputs)."""
    wire_dtype = dtype_to_wire(dtype) if isinstance(dtype, np.dtype) else [list(f) for f in dtype]
    msg: dict[str, Any] = {
            "t": T_WELCOME,
            "v": PROTOCOL_VERSION,
            "player": int(player),
            "tick": int(tick),
            "tick_rate": int(tick_rate),
            "send_rate": int(send_rate),
            "game": game,
            # numpy scalars are not msgpack-serialisable; constants often come out of arrays.
            "world": {str(k): _plain_scalar(v) for k, v in world.items()},
            "dtype": wire_dtype,
            "a": int(ack_seq),
    }
    if rep is not None:
        msg["rep"] = dict(rep)
    if spec is not None:
        msg["spec"] = dict(spec)
    out: bytes = _packb(msg)
    return out


def _plain_scalar(v: object) -> float | int | str:
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v)
    if isinstance(v, str):
        return v
    raise TypeError(f"world constant must be int, float or str, got {type(v).__name__}")


def encode_input(
    seq: int, client_tick: int, values: Mapping[str, float | int] | None = None, ack: int | None = None
) -> bytes:
    """An input frame: the engine's keys and the game's `values` by wire key, as given (the client
    session leaves out keys whose value is the default, 0)."""
    m: dict[str, Any] = {"t": T_INPUT, "s": seq, "ct": client_tick}
    if values:
        m.update(values)
    if ack is not None:
        m["ack"] = ack
    # float32 is what the sim stores float inputs as, and it saves 4 bytes per float.
    out: bytes = _packb(m, use_single_float=True)
    return out


def encode_events(tick: int, events: Iterable[Sequence[int]]) -> bytes:
    """`events` are (kind, a, b) triples; numpy integers are accepted and converted."""
    out: bytes = _packb({"t": T_EVENTS, "k": int(tick), "ev": [[int(e[0]), int(e[1]), int(e[2])] for e in events]})
    return out


def encode_error(code: int, msg: str) -> bytes:
    out: bytes = _packb({"t": T_ERROR, "code": int(code), "msg": msg[:MAX_ERROR_MSG]})
    return out


def encode_ping(client_time: float) -> bytes:
    out: bytes = _packb({"t": T_PING, "c": float(client_time)})
    return out


def encode_pong(client_time: float, server_time_ms: float, tick: int) -> bytes:
    out: bytes = _packb({"t": T_PONG, "c": float(client_time), "s": float(server_time_ms), "k": int(tick)})
    return out


def encode_bye(reason: str) -> bytes:
    out: bytes = _packb({"t": T_BYE, "reason": reason[:MAX_ERROR_MSG]})
    return out


# --------------------------------------------------------------------------- snapshots
# A snapshot frame is, byte for byte, what msgpack.packb({"t":"s","k":tick,"a":seq,"e":body})
# produces (see docs/protocol.md). The body is identical for every client of a send, so its bin
# header and bytes are assembled once ("tail"); per client only the ack seq differs.

_U8 = struct.Struct(">BB")
_U16 = struct.Struct(">BH")
_U32 = struct.Struct(">BI")
_U64 = struct.Struct(">BQ")
_FIXINT: Final = tuple(bytes((i,)) for i in range(128))

SNAPSHOT_HEAD: Final = b"\x84\xa1t\xa1s\xa1k"  # fixmap(4), "t", "s", "k"
SNAPSHOT_ACK_KEY: Final = b"\xa1a"
SNAPSHOT_BODY_KEY: Final = b"\xa1e"


def pack_uint(n: int) -> bytes:
    """msgpack's canonical (shortest) encoding of a non-negative int, as packb would emit it.

    With `read_uint`, the one Python msgpack uint coder (the frame kernels of
    netcode/replication/group_kernels.py write the same bytes from numba)."""
    if n < 128:
        if n < 0:
            raise ValueError("pack_uint: negative")
        return _FIXINT[n]
    if n < 0x100:
        return _U8.pack(0xCC, n)
    if n < 0x10000:
        return _U16.pack(0xCD, n)
    if n <= UINT32_MAX:
        return _U32.pack(0xCE, n)
    if n <= UINT64_MAX:
        return _U64.pack(0xCF, n)
    raise ValueError("pack_uint: above uint64")


def bin_header(n: int) -> bytes:
    if n < 0x100:
        return _U8.pack(0xC4, n)
    if n < 0x10000:
        return _U16.pack(0xC5, n)
    if n <= UINT32_MAX:
        return _U32.pack(0xC6, n)
    raise ValueError("bin body larger than 4 GiB")


class PreparedSnapshot:
    """One send's snapshot, shared by all clients: call `frame(ack_seq)` per client."""

    __slots__ = ("_head", "body_len", "tail", "tick")

    def __init__(self, tick: int, body: bytes | bytearray | memoryview | np.ndarray) -> None:
        # A view, not a copy: the one copy of the body happens in the join below.
        mv = memoryview(np.ascontiguousarray(body) if isinstance(body, np.ndarray) else body)  # type: ignore[arg-type]
        n = mv.nbytes
        self.tick = tick
        self.body_len = n
        self._head = SNAPSHOT_HEAD + pack_uint(tick) + SNAPSHOT_ACK_KEY
        self.tail = b"".join((SNAPSHOT_BODY_KEY, bin_header(n), mv))

    def frame(self, ack_seq: int) -> bytes:
        """The complete snapshot frame for a client whose newest processed input is `ack_seq`."""
        # One join: a single allocation and copy of the tail, whatever the body size.
        return b"".join((self._head, pack_uint(ack_seq), self.tail))


class SnapshotEncoder:
    """Builds the shared part of each send once, then per-client frames cheaply.

    Usage per send: `prep = enc.prepare(tick, records)` then `prep.frame(last_seq)` per client.
    The encoder checks the body against the record dtype announced in the welcome.
    """

    __slots__ = ("dtype", "wire_dtype")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.wire_dtype = dtype_to_wire(dtype)

    def prepare(self, tick: int, records: np.ndarray | bytes | bytearray | memoryview) -> PreparedSnapshot:
        if isinstance(records, np.ndarray):
            if records.dtype != self.dtype:
                raise ValueError(f"records dtype {records.dtype} differs from the announced {self.dtype}")
        elif memoryview(records).nbytes % self.dtype.itemsize:
            raise ValueError("body length is not a multiple of the record size")
        return PreparedSnapshot(tick, records)


def encode_snapshot(tick: int, ack_seq: int, body: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    """Single-client convenience; for a broadcast use PreparedSnapshot to share the body."""
    return PreparedSnapshot(tick, body).frame(ack_seq)


def read_uint(buf: bytes | bytearray | memoryview, i: int) -> tuple[int, int]:
    """(value, next index) of the msgpack uint at buf[i]; IndexError/ValueError if there is none."""
    b = buf[i]
    if b < 0x80:
        return b, i + 1
    if b == 0xCC:
        return buf[i + 1], i + 2
    if b == 0xCD:
        return int.from_bytes(buf[i + 1 : i + 3], "big"), i + 3
    if b == 0xCE:
        return int.from_bytes(buf[i + 1 : i + 5], "big"), i + 5
    if b == 0xCF:
        return int.from_bytes(buf[i + 1 : i + 9], "big"), i + 9
    raise ValueError("not a msgpack uint")


def peek_snapshot_header(payload: bytes | bytearray | memoryview | str) -> tuple[int, int] | None:
    """(tick, ack_seq) of a snapshot frame without decoding its body; None for any other frame.

    Fast path for frames shaped like ours (fixed header); anything else, e.g. a snapshot encoded
    by another implementation with a different key order, goes through a full unpack.
    """
    if isinstance(payload, str):
        return None
    buf = bytes(payload[:32]) if not isinstance(payload, bytes) else payload
    if buf.startswith(SNAPSHOT_HEAD):
        try:
            tick, i = read_uint(buf, 7)
            if buf[i : i + 2] == SNAPSHOT_ACK_KEY:
                seq, _ = read_uint(buf, i + 2)
                return tick, seq
        except (IndexError, ValueError):
            pass
    try:
        m = _unpackb(payload)
    except Exception:  # any garbage simply is not a snapshot
        return None
    if type(m) is not dict or m.get("t") != T_SNAPSHOT:
        return None
    k, a = m.get("k"), m.get("a")
    if type(k) is not int or type(a) is not int:
        return None
    return k, a


# --------------------------------------------------------------------------- record dtype on the wire

_FORMAT_RE = re.compile(r"^(<[iuf][248]|\|[iub]1)$")


def dtype_to_wire(dtype: np.dtype) -> list[list[str]]:
    """[[name, format], ...] for a packed, little-endian record dtype of scalar numeric fields."""
    if dtype.fields is None or dtype.names is None:
        raise ValueError("a structured (record) dtype is required")
    out: list[list[str]] = []
    offset = 0
    for name in dtype.names:
        fdt, foff = dtype.fields[name][:2]
        if fdt.subdtype is not None or fdt.fields is not None:
            raise ValueError(f"field {name!r}: only scalar fields can go on the wire")
        fmt = fdt.str
        if fmt.startswith("="):
            fmt = "<" + fmt[1:]
        if not _FORMAT_RE.match(fmt):
            raise ValueError(f"field {name!r}: format {fmt} not allowed (little-endian int/uint/float/bool)")
        if foff != offset:
            raise ValueError(f"field {name!r}: dtype is not packed (padding before offset {foff})")
        offset += fdt.itemsize
        out.append([name, fmt])
    if offset != dtype.itemsize:
        raise ValueError("dtype is not packed (trailing padding)")
    return out


def dtype_from_wire(spec: object) -> np.dtype:
    """Rebuild the packed record dtype from a welcome's "dtype"; ProtocolError(BAD_FIELD) if invalid."""
    if not isinstance(spec, list | tuple) or not 1 <= len(spec) <= MAX_DTYPE_FIELDS:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"dtype must be a list of 1..{MAX_DTYPE_FIELDS} fields")
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in spec:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ProtocolError(ErrorCode.BAD_FIELD, "dtype field must be [name, format]")
        name, fmt = item
        if type(name) is not str or not 1 <= len(name) <= MAX_FIELD_NAME or name in seen:
            raise ProtocolError(ErrorCode.BAD_FIELD, "dtype field name invalid or repeated")
        if type(fmt) is not str or not _FORMAT_RE.match(fmt):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"dtype format not allowed: {fmt!r}"[:MAX_ERROR_MSG])
        seen.add(name)
        fields.append((name, fmt))
    # A list of (name, format) pairs gives a packed dtype (align=False), matching dtype_to_wire.
    return np.dtype(fields)
