"""Hostile WebRTC input: each gets a clear error (or is shrugged off), and the tick and a bystander
playing over WebSocket never notice."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import msgpack
import pytest

from engine.server import GameServer
from netcode.client import ArbiterClient
from netcode.protocol import CloseCode, ErrorCode
from netcode.signaling import MAX_CANDIDATES, encode_candidate, encode_offer
from netcode.ws_client import ws_connect
from tests.rtcutil import loopback_ice, rtc_server
from tests.serverutil import url, wait_for


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_ice(monkeypatch)


async def bystander_unaffected(server: GameServer, bystander: ArbiterClient) -> None:
    tick0, snaps0 = server.campaign.tick_count, bystander.snapshots
    seq = bystander.send_input(0.2, 0.0)
    await wait_for(lambda: bystander.session.last_ack_seq >= seq and bystander.snapshots > snaps0 + 5, 5)
    assert server.campaign.tick_count > tick0 and bystander.is_open


SHAPE = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
APP = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"


@pytest.mark.parametrize(
    ("sdp", "code", "words"),
    [
        ("hello", ErrorCode.RTC_BAD_SIGNAL, "v=0"),
        (SHAPE + "garbage line\r\n" + APP, ErrorCode.RTC_BAD_SIGNAL, "line 5"),
        (SHAPE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + APP, ErrorCode.RTC_BAD_SIGNAL, "video"),
        (SHAPE + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", ErrorCode.RTC_BAD_SIGNAL, "application"),
        (SHAPE + "m=audio 9 X 0\n" * 1000 + APP, ErrorCode.RTC_BAD_SIGNAL, "1001 media sections"),
        (SHAPE + ("a=" + "x" * 100 + "\r\n") * 157 + APP, ErrorCode.TOO_LARGE, "16384"),
        (SHAPE + "s=\x00\x01\r\n" + APP, ErrorCode.RTC_BAD_SIGNAL, "control"),
    ],
    ids=["not-sdp", "bad-line", "video", "no-datachannel", "1000-mlines", "too-large", "controls"],
)
async def test_malformed_offers_get_a_clear_error(sdp: str, code: ErrorCode, words: str) -> None:
    async with rtc_server() as server:
        bystander = await ArbiterClient.connect(url(server), "bystander")
        bad = await ArbiterClient.connect(url(server), "mallory")
        bad.send_raw(encode_offer(sdp))
        await wait_for(lambda: len(bad.errors) >= 1)
        assert bad.errors[0].code == code and words in bad.errors[0].msg, bad.errors[0]
        assert server.rtc is not None and server.rtc.stats()["offers"] == 0  # nothing reached a worker
        await bystander_unaffected(server, bystander)


async def test_offer_above_the_transport_limit_closes_with_1009() -> None:
    async with rtc_server() as server:
        bystander = await ArbiterClient.connect(url(server), "bystander")
        bad = await ArbiterClient.connect(url(server), "mallory")
        # A real offer with 1,000 audio sections is ~30 KB: more than any frame the server reads.
        bad.send_raw(encode_offer(SHAPE + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" * 1000 + APP))
        code, _ = await bad.wait_closed()
        assert code == CloseCode.TOO_BIG
        await bystander_unaffected(server, bystander)


async def test_offer_that_aiortc_refuses_is_reported_and_the_worker_survives() -> None:
    async with rtc_server() as server:
        bad = await ArbiterClient.connect(url(server), "mallory")
        # Shape-valid, yet no ICE credentials, no fingerprint: aiortc refuses it in the worker.
        bad.send_raw(encode_offer(SHAPE + APP + "a=mid:0\r\n"))
        await wait_for(lambda: any(e.code == ErrorCode.RTC_BAD_SIGNAL for e in bad.errors), 10)
        await wait_for(lambda: bool(bad.rtc_states) and bad.rtc_states[-1].state == "down", 5)
        assert "offer refused" in bad.rtc_states[-1].reason
        good = await ArbiterClient.connect(url(server), "good")
        assert (await good.start_webrtc()).up  # the same worker serves the next client
        await bystander_unaffected(server, good)


async def test_candidate_flood_is_refused_then_cut_off() -> None:
    async with rtc_server(max_offences=5) as server:
        bystander = await ArbiterClient.connect(url(server), "bystander")
        bad = await ArbiterClient.connect(url(server), "mallory")
        bad.send_raw(msgpack.packb({"t": "rtc_ice", "c": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}))
        await wait_for(lambda: len(bad.errors) >= 1)
        assert bad.errors[0].code == ErrorCode.NOT_READY  # a candidate before any offer
        rtc = await bad.start_webrtc(timeout=5.0)
        assert rtc.up
        for i in range(MAX_CANDIDATES + 10):
            bad.send_raw(encode_candidate(f"candidate:{i} 1 udp 2130706431 127.0.0.1 {9000 + i} typ host", "0"))
        code, _ = await bad.wait_closed()
        assert code == CloseCode.PROTOCOL_VIOLATION
        # The last error travels with the bye on the WebSocket; earlier ones on the reliable channel.
        assert bad.errors[-1].code == ErrorCode.RTC_LIMIT
        await wait_for(lambda: server.rtc is not None and server.rtc.stats()["peers"] == 0)  # its peer closed too
        await bystander_unaffected(server, bystander)


async def test_signaling_before_hello_is_not_ready() -> None:
    async with rtc_server() as server:
        got: list[dict[str, object]] = []
        conn = await ws_connect(url(server), lambda p: got.append(msgpack.unpackb(p)))
        conn.send(encode_offer(SHAPE + APP))
        await wait_for(lambda: bool(got))
        assert got[0]["t"] == "err" and got[0]["code"] == ErrorCode.NOT_READY
        assert server.rtc is not None and server.rtc.stats()["offers"] == 0
        conn.close()


async def test_garbage_at_the_workers_udp_port_does_not_hurt() -> None:
    async with rtc_server() as server:
        player = await ArbiterClient.connect(url(server), "player")
        rtc = await player.start_webrtc()
        assert rtc.up
        answer = rtc.pc.remoteDescription.sdp
        ports = {int(line.split()[5]) for line in answer.splitlines() if line.startswith("a=candidate:")}
        assert ports
        rng = random.Random(3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3000):
                # STUN-looking (first byte 0-3), DTLS-looking (content type 20-63) and random bytes
                head = [bytes([rng.randrange(0, 4)]), bytes([rng.randrange(20, 64)]), b""][i % 3]
                payload = head + os.urandom(rng.randrange(1, 1200))
                for port in ports:
                    s.sendto(payload, ("127.0.0.1", port))
                if i % 200 == 0:
                    await asyncio.sleep(0.005)
        fast0 = rtc.fast_in
        seq = player.send_input(0.4, 0.0)
        await wait_for(lambda: player.session.last_ack_seq >= seq and rtc.fast_in > fast0 + 10, 10)
        assert rtc.up and server.rtc is not None and server.rtc.links[0].alive
        await bystander_unaffected(server, player)
