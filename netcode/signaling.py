"""WebRTC signaling over the WebSocket session (Sans-I/O): messages, their checks, their encoders.

A client that already plays over WebSocket may move its snapshots and inputs to WebRTC data
channels (docs/protocol.md §6, docs/webrtc.md). The offer, the trickled ICE candidates and the voice
controls travel as ordinary session messages; this module checks them like every other message
(types, sizes, counts) before anything reaches aiortc, which runs in relay worker processes. Every
check is cheap and bounded: an SDP is scanned line by line once, and the number of media sections
is counted before anything else is looked at (an offer with 1,000 m-lines costs one `count`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from netcode.protocol import UINT32_MAX, ErrorCode, ProtocolError, req_int, req_str

# Type keys. C→S: offer, candidate, close, TURN request, voice control. S→C: answer, state, TURN
# servers, voice slots.
T_RTC_OFFER: Final = "rtc_offer"
T_RTC_ICE: Final = "rtc_ice"
T_RTC_CLOSE: Final = "rtc_close"
T_RTC_ANSWER: Final = "rtc_answer"
T_RTC_STATE: Final = "rtc"
T_TURN: Final = "turn"
T_VOICE: Final = "vc"
T_VOICE_SLOTS: Final = "vs"

CLIENT_TYPES: Final = frozenset({T_RTC_OFFER, T_RTC_ICE, T_RTC_CLOSE, T_TURN, T_VOICE})
SERVER_TYPES: Final = frozenset({T_RTC_ANSWER, T_RTC_STATE, T_TURN, T_VOICE_SLOTS})

# A browser offer with a microphone, four receive-only audio sections and the data channels is
# ~7 KiB (Chromium lists ~15 codecs and ~8 header extensions per audio section); aiortc's is ~3 KiB.
MAX_SDP: Final = 16 * 1024
# The only frame above the session's MAX_FRAME that an active session accepts: one offer.
MAX_SIGNAL_FRAME: Final = MAX_SDP + 256
MAX_SDP_LINES: Final = 600
MAX_SDP_LINE: Final = 1024
MAX_VOICE_SLOTS: Final = 4  # audio streams a listener receives at once (the nearest speakers)
MAX_MEDIA: Final = 1 + MAX_VOICE_SLOTS  # audio sections: the first carries the microphone
MAX_CANDIDATE: Final = 512
MAX_MID: Final = 32
MAX_CANDIDATES: Final = 32  # trickled candidates per offer; a browser sends ~2-8
MAX_OFFERS: Final = 16  # per connection; a client that needs more reconnects
MAX_BLOCKS: Final = 256
MAX_TURN_REQUESTS: Final = 32  # per connection; a credential lasts its ttl (an hour by default)

STATE_UP: Final = "up"  # both data channels are open: snapshots now travel over WebRTC
STATE_DOWN: Final = "down"  # WebRTC is off for this client (reason says why); WebSocket carries all

_DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")

_packb = msgpack.packb


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(ErrorCode.RTC_BAD_SIGNAL, msg)


# --------------------------------------------------------------------------- events (C→S)


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str  # "audio" | "application"
    direction: str  # the client's: sendrecv | sendonly | recvonly | inactive


@dataclass(frozen=True, slots=True)
class RtcOffer:
    sdp: str
    media: tuple[MediaSection, ...]

    @property
    def sends_audio(self) -> bool:
        """The first audio section carries the client's microphone."""
        audio = [m for m in self.media if m.kind == "audio"]
        return bool(audio) and audio[0].direction in ("sendrecv", "sendonly")

    @property
    def voice_slots(self) -> int:
        """Audio streams the client can receive: its audio sections that accept media."""
        return sum(1 for m in self.media if m.kind == "audio" and m.direction in ("sendrecv", "recvonly"))


@dataclass(frozen=True, slots=True)
class RtcCandidate:
    candidate: str  # "candidate:..." (RFC 8839 §5.1) or "" for end-of-candidates
    mid: str | None
    mline: int | None


@dataclass(frozen=True, slots=True)
class RtcClose:
    pass


@dataclass(frozen=True, slots=True)
class TurnRequest:
    pass


@dataclass(frozen=True, slots=True)
class VoiceControl:
    talk: bool | None  # push-to-talk pressed (True) or released (False); None: unchanged
    block: int | None  # an entity id whose voice this listener blocks or unblocks
    on: bool  # block (True) or unblock (False)


SignalEvent = RtcOffer | RtcCandidate | RtcClose | TurnRequest | VoiceControl
SIGNAL_EVENTS: Final = (RtcOffer, RtcCandidate, RtcClose, TurnRequest, VoiceControl)


def check_sdp(sdp: str) -> tuple[MediaSection, ...]:
    """The media sections of an offer, or ProtocolError(RTC_BAD_SIGNAL) naming what is wrong.

    Shape only (aiortc parses the rest in the worker): bounded size and line count, printable
    ASCII, `x=` lines starting with `v=0`, at most MAX_MEDIA audio sections and one application
    section (the data channels), which is required. Video is refused: Arbiter relays voice only.
    """
    if len(sdp) > MAX_SDP:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"offer larger than {MAX_SDP} bytes")
    nm = sdp.count("\nm=")  # the sections, counted before anything is split
    if nm > MAX_MEDIA + 1:
        raise _bad(f"offer has {nm} media sections; at most {MAX_MEDIA} audio and 1 application")
    if not sdp.isascii():
        raise _bad("SDP must be ASCII")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_SDP_LINES:
        raise _bad(f"SDP has {len(lines)} lines; at most {MAX_SDP_LINES}")
    if not lines or lines[0] != "v=0":
        raise _bad('SDP must start with "v=0"')
    media: list[list[str]] = []  # [kind, direction]
    for n, line in enumerate(lines, 1):
        if len(line) > MAX_SDP_LINE or len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
            raise _bad(f"SDP line {n} is not a <letter>=<value> line")
        if not line.isprintable():
            raise _bad(f"SDP line {n} has control characters")
        if line[0] == "m":
            parts = line[2:].split(" ")
            if len(parts) < 4 or not parts[1].isdigit():
                raise _bad(f"SDP line {n}: malformed m-line")
            kind = parts[0]
            if kind not in ("audio", "application"):
                raise _bad(f"SDP line {n}: media {kind[:16]!r} refused (audio and data channels only)")
            media.append([kind, "sendrecv"])
        elif line[0] == "a" and media and line[2:] in _DIRECTIONS:
            media[-1][1] = line[2:]
    kinds = [m[0] for m in media]
    if kinds.count("application") != 1:
        raise _bad("offer needs exactly one application section (the data channels)")
    if kinds.count("audio") > MAX_MEDIA:
        raise _bad(f"offer has {kinds.count('audio')} audio sections; at most {MAX_MEDIA}")
    return tuple(MediaSection(k, d) for k, d in media)


def parse_signal(m: Mapping[str, Any]) -> SignalEvent:
    """One decoded C→S signaling message (its "t" is in CLIENT_TYPES) as an event."""
    t = m["t"]
    if t == T_RTC_OFFER:
        sdp = req_str(m, "sdp")
        return RtcOffer(sdp, check_sdp(sdp))
    if t == T_RTC_ICE:
        cand = req_str(m, "c")
        if len(cand) > MAX_CANDIDATE:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"candidate longer than {MAX_CANDIDATE} bytes")
        if cand and (not cand.startswith("candidate:") or not cand.isascii() or not cand.isprintable()):
            raise _bad('candidate must be "candidate:..." (RFC 8839) or "" (end of candidates)')
        mid = m.get("mid")
        if mid is not None and (type(mid) is not str or len(mid) > MAX_MID or not mid.isprintable()):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"mid must be a string of at most {MAX_MID} characters")
        mline = None if m.get("ml") is None else req_int(m, "ml", 0, MAX_MEDIA + 1)
        return RtcCandidate(cand, mid, mline)
    if t == T_RTC_CLOSE:
        return RtcClose()
    if t == T_TURN:
        return TurnRequest()
    # T_VOICE
    talk = m.get("talk")
    if talk is not None and type(talk) is not bool:
        raise ProtocolError(ErrorCode.BAD_FIELD, "talk must be a bool")
    block = None if m.get("block") is None else req_int(m, "block", 0, UINT32_MAX)
    on = m.get("on", True)
    if type(on) is not bool:
        raise ProtocolError(ErrorCode.BAD_FIELD, "on must be a bool")
    if talk is None and block is None:
        raise ProtocolError(ErrorCode.BAD_FIELD, 'vc needs "talk" or "block"')
    return VoiceControl(talk, block, on)


class SignalBudget:
    """Per-connection counts of signaling (Sans-I/O): offers, candidates per offer, TURN requests,
    blocks."""

    __slots__ = ("blocks", "candidates", "offers", "turns")

    def __init__(self) -> None:
        self.offers = 0
        self.candidates = 0
        self.turns = 0
        self.blocks: set[int] = set()

    def check(self, ev: SignalEvent) -> SignalEvent:
        """`ev` if within the budget, else ProtocolError(RTC_LIMIT)."""
        if type(ev) is RtcOffer:
            if self.offers >= MAX_OFFERS:
                raise ProtocolError(ErrorCode.RTC_LIMIT, f"more than {MAX_OFFERS} offers on one connection")
            self.offers += 1
            self.candidates = 0
        elif type(ev) is RtcCandidate:
            if self.offers == 0:
                raise ProtocolError(ErrorCode.NOT_READY, "candidate before an offer")
            if self.candidates >= MAX_CANDIDATES:
                raise ProtocolError(ErrorCode.RTC_LIMIT, f"more than {MAX_CANDIDATES} candidates for one offer")
            self.candidates += 1
        elif type(ev) is TurnRequest:
            # Each answer is ~20 times the request's size: no amplification beyond a handful.
            if self.turns >= MAX_TURN_REQUESTS:
                raise ProtocolError(
                    ErrorCode.RTC_LIMIT, f"more than {MAX_TURN_REQUESTS} TURN requests on one connection"
                )
            self.turns += 1
        elif type(ev) is VoiceControl and ev.block is not None:
            if ev.on:
                if ev.block not in self.blocks and len(self.blocks) >= MAX_BLOCKS:
                    raise ProtocolError(ErrorCode.RTC_LIMIT, f"more than {MAX_BLOCKS} blocked players")
                self.blocks.add(ev.block)
            else:
                self.blocks.discard(ev.block)
        return ev


# --------------------------------------------------------------------------- encoders


def _pack(m: dict[str, Any]) -> bytes:
    out: bytes = _packb(m)
    return out


def encode_offer(sdp: str) -> bytes:
    return _pack({"t": T_RTC_OFFER, "sdp": sdp})


def encode_candidate(candidate: str, mid: str | None = None, mline: int | None = None) -> bytes:
    m: dict[str, Any] = {"t": T_RTC_ICE, "c": candidate}
    if mid is not None:
        m["mid"] = mid
    if mline is not None:
        m["ml"] = mline
    return _pack(m)


def encode_rtc_close() -> bytes:
    return _pack({"t": T_RTC_CLOSE})


def encode_turn_request() -> bytes:
    return _pack({"t": T_TURN})


def encode_talk(on: bool) -> bytes:
    return _pack({"t": T_VOICE, "talk": bool(on)})


def encode_block(eid: int, on: bool = True) -> bytes:
    return _pack({"t": T_VOICE, "block": int(eid), "on": bool(on)})


def encode_answer(sdp: str) -> bytes:
    return _pack({"t": T_RTC_ANSWER, "sdp": sdp})


def encode_rtc_state(state: str, reason: str = "") -> bytes:
    return _pack({"t": T_RTC_STATE, "state": state, "reason": reason[:200]})


def encode_turn(servers: Sequence[Mapping[str, Any]], ttl: int) -> bytes:
    """`servers` as RTCIceServer dicts: {"urls": [...], "username": ..., "credential": ...}."""
    return _pack({"t": T_TURN, "ice": [dict(s) for s in servers], "ttl": int(ttl)})


def encode_voice_slots(slots: Sequence[int]) -> bytes:
    """Which entity speaks in each of the client's receiving audio sections (0: silent)."""
    return _pack({"t": T_VOICE_SLOTS, "s": [int(e) for e in slots]})


# --------------------------------------------------------------------------- S→C, client side


@dataclass(frozen=True, slots=True)
class RtcAnswer:
    sdp: str


@dataclass(frozen=True, slots=True)
class RtcState:
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class TurnServers:
    servers: list[dict[str, Any]]
    ttl: int


@dataclass(frozen=True, slots=True)
class VoiceSlots:
    slots: list[int]


ServerSignal = RtcAnswer | RtcState | TurnServers | VoiceSlots


def parse_server_signal(m: Mapping[str, Any]) -> ServerSignal:
    """A decoded S→C signaling message (its "t" is in SERVER_TYPES); ProtocolError if malformed."""
    t = m["t"]
    if t == T_RTC_ANSWER:
        return RtcAnswer(req_str(m, "sdp"))
    if t == T_RTC_STATE:
        return RtcState(req_str(m, "state"), req_str(m, "reason"))
    if t == T_TURN:
        ice = m.get("ice")
        if type(ice) is not list or not all(type(s) is dict for s in ice):
            raise ProtocolError(ErrorCode.BAD_FIELD, '"ice" must be a list of maps')
        return TurnServers(ice, req_int(m, "ttl", 0, UINT32_MAX))
    slots = m.get("s")
    if type(slots) is not list or not all(type(e) is int for e in slots):
        raise ProtocolError(ErrorCode.BAD_FIELD, '"s" must be a list of ints')
    return VoiceSlots(slots)
