"""The Sans-I/O parts of WebRTC: offer and candidate checks, the signaling budget, the worker link's
records, voice slot assignment, and TURN credentials as coturn checks them."""

from __future__ import annotations

import asyncio
import time

import aioice.turn
import msgpack
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcconfiguration import RTCConfiguration

from engine.webrtc.relay import strip_ws_header
from engine.webrtc.turn import turn_credentials
from netcode import relay_ipc as ipc
from netcode.protocol import ErrorCode, ProtocolError
from netcode.session import ServerSession
from netcode.signaling import (
    MAX_BLOCKS,
    MAX_CANDIDATES,
    MAX_OFFERS,
    MAX_SIGNAL_FRAME,
    MAX_TURN_REQUESTS,
    RtcCandidate,
    RtcOffer,
    SignalBudget,
    TurnRequest,
    VoiceControl,
    check_sdp,
    encode_block,
    encode_candidate,
    encode_offer,
    encode_talk,
    parse_signal,
)
from netcode.voice import assign_slots, nearest
from netcode.ws_frames import OP_BINARY, server_frame
from tests.rtcutil import TURN_SECRET, coturn


async def aiortc_offer(audio: list[str]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("u", negotiated=True, id=0)
    for direction in audio:
        pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_real_offers_pass_and_count_their_voice_slots() -> None:
    sdp = await aiortc_offer(["sendrecv", "recvonly", "recvonly"])
    media = check_sdp(sdp)
    offer = RtcOffer(sdp, media)
    assert [m.kind for m in media].count("application") == 1
    assert offer.sends_audio and offer.voice_slots == 3
    listen_only = RtcOffer("", check_sdp(await aiortc_offer(["recvonly"])))
    assert not listen_only.sends_audio and listen_only.voice_slots == 1
    data_only = RtcOffer("", check_sdp(await aiortc_offer([])))
    assert not data_only.sends_audio and data_only.voice_slots == 0


def active_session(max_signal_frame: int = MAX_SIGNAL_FRAME) -> ServerSession:
    s = ServerSession(max_signal_frame=max_signal_frame, max_offences=100)
    s.receive(msgpack.packb({"t": "hello", "v": 1, "name": "ada"}), 0.0)
    s.accept(1, 0, 60, 20, "wander", {}, [["id", "<u4"]])
    s.data_to_send()
    return s


def error_codes(s: ServerSession) -> list[int]:
    return [msgpack.unpackb(f)["code"] for f in s.data_to_send() if msgpack.unpackb(f)["t"] == "err"]


async def test_session_accepts_one_big_offer_but_no_other_big_frame() -> None:
    sdp = await aiortc_offer(["sendrecv"])
    s = active_session()
    big = sdp + ("a=x-pad:" + "p" * 100 + "\r\n") * 50  # above MAX_FRAME (4096), a legal offer
    (ev,) = s.receive(encode_offer(big), 1.0)
    assert isinstance(ev, RtcOffer)
    assert s.receive(msgpack.packb({"t": "ping", "c": 1.0, "pad": "x" * 6000}), 1.0) == []
    assert error_codes(s) == [ErrorCode.TOO_LARGE]
    # Without WebRTC the same offer is just too large.
    off = active_session(max_signal_frame=0)
    assert off.receive(encode_offer(big), 1.0) == []
    assert error_codes(off) == [ErrorCode.TOO_LARGE]


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ({"t": "rtc_offer", "sdp": 5}, ErrorCode.BAD_FIELD),
        ({"t": "rtc_ice", "c": "typ host"}, ErrorCode.RTC_BAD_SIGNAL),
        ({"t": "rtc_ice", "c": "candidate:" + "1" * 600}, ErrorCode.TOO_LARGE),
        ({"t": "rtc_ice", "c": "candidate:1\r\na=inject"}, ErrorCode.RTC_BAD_SIGNAL),
        ({"t": "rtc_ice", "c": "candidate:1", "mid": 7}, ErrorCode.BAD_FIELD),
        ({"t": "rtc_ice", "c": "candidate:1", "ml": 99}, ErrorCode.BAD_FIELD),
        ({"t": "vc"}, ErrorCode.BAD_FIELD),
        ({"t": "vc", "talk": 1}, ErrorCode.BAD_FIELD),
        ({"t": "vc", "block": -1}, ErrorCode.BAD_FIELD),
    ],
)
def test_bad_signaling_fields(msg: dict[str, object], code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_signal(msg)
    assert exc.value.code == code


def test_budget_counts_offers_candidates_and_blocks() -> None:
    b = SignalBudget()
    cand = parse_signal(msgpack.unpackb(encode_candidate("candidate:1 1 udp 1 127.0.0.1 9 typ host", "0")))
    assert isinstance(cand, RtcCandidate) and cand.mid == "0"
    with pytest.raises(ProtocolError) as exc:
        b.check(cand)
    assert exc.value.code == ErrorCode.NOT_READY
    offer = RtcOffer("", ())
    for _ in range(MAX_OFFERS):
        b.check(offer)
        for _ in range(MAX_CANDIDATES):
            b.check(cand)
        with pytest.raises(ProtocolError) as exc:
            b.check(cand)
        assert exc.value.code == ErrorCode.RTC_LIMIT
    with pytest.raises(ProtocolError):
        b.check(offer)
    for e in range(MAX_BLOCKS):
        b.check(VoiceControl(None, e, True))
    b.check(VoiceControl(None, 5, True))  # blocking twice is no new block
    with pytest.raises(ProtocolError):
        b.check(VoiceControl(None, 10**6, True))
    b.check(VoiceControl(None, 5, False))
    assert len(b.blocks) == MAX_BLOCKS - 1
    for _ in range(MAX_TURN_REQUESTS):
        b.check(TurnRequest())
    with pytest.raises(ProtocolError) as exc:
        b.check(TurnRequest())
    assert exc.value.code == ErrorCode.RTC_LIMIT
    assert parse_signal(msgpack.unpackb(encode_talk(True))) == VoiceControl(True, None, True)
    assert parse_signal(msgpack.unpackb(encode_block(9, False))) == VoiceControl(None, 9, False)


def test_worker_link_records_round_trip_in_any_chunking_and_refuse_corruption() -> None:
    recs = [(ipc.FAST, 7, b"snapshot"), (ipc.ROUTE, 3, ipc.pack_route([1, 0, 9])), (ipc.CLOSE, 7, b"")]
    stream = b"".join(ipc.pack(*r) for r in recs)
    for chunk in (1, 3, len(stream)):
        r = ipc.RecordReader()
        got = [rec for i in range(0, len(stream), chunk) for rec in r.feed(stream[i : i + chunk])]
        assert got == recs and r.pending == 0
    assert ipc.unpack_route(recs[1][2]) == [1, 0, 9]
    with pytest.raises(ipc.RecordError):
        ipc.RecordReader().feed(ipc.HEADER.pack(ipc.MAX_RECORD + 1, ipc.FAST, 1))
    with pytest.raises(ipc.RecordError):
        ipc.unpack_route(b"\x01\x02\x03")


def test_strip_ws_header_gives_the_payload_for_every_length_form() -> None:
    for n in (0, 125, 126, 65535, 65536):
        payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
        assert bytes(strip_ws_header(server_frame(OP_BINARY, payload))) == payload


def test_voice_slots_keep_speakers_in_place_and_pick_the_nearest() -> None:
    assert assign_slots([0, 0], [5, 6, 7]) == [5, 6]
    assert assign_slots([5, 6], [7, 6]) == [7, 6]  # 6 stays where it was
    assert assign_slots([5, 6], []) == [0, 0]
    ids = np.array([11, 12, 13, 14])
    x = np.array([0.0, 5.0, 1.0, 50.0])
    y = np.zeros(4)
    assert nearest(0.0, 0.0, ids, x, y, radius=10.0, k=2) == [11, 13]
    assert nearest(0.0, 0.0, ids, x, y, radius=10.0, k=5, exclude={11}) == [13, 12]
    assert nearest(0.0, 0.0, ids, x, y, radius=10.0, k=0) == []


async def test_coturn_accepts_our_credentials_and_refuses_forged_ones() -> None:
    with coturn() as turn:
        now = time.time()

        async def allocate(username: str, password: str) -> bool:
            try:
                transport, _ = await asyncio.wait_for(
                    aioice.turn.create_turn_endpoint(
                        asyncio.DatagramProtocol, server_addr=("127.0.0.1", turn.port), username=username,
                        password=password, lifetime=60,
                    ),
                    5,
                )  # fmt: skip
            except Exception:
                return False
            transport.close()
            return True

        user, password = turn_credentials(TURN_SECRET, "ada", now, 600)
        assert user.endswith(":ada") and int(user.split(":")[0]) == int(now) + 600
        assert await allocate(user, password)
        assert not await allocate(*turn_credentials("not-the-secret", "ada", now, 600))
        assert not await allocate(*turn_credentials(TURN_SECRET, "ada", now - 1200, 600))  # expired
