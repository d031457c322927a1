"""Proximity voice: a speaker's generated tone reaches a listener in range, not one out of range;
push-to-talk, block and a server-side mute stop it (the mute at the server: packets still arrive
at the worker and are not forwarded)."""

from __future__ import annotations

import pytest

from engine.server import GameServer
from netcode.client import ArbiterClient
from sim.entities import SLOT_MASK
from tests.rtcutil import Tone, loopback_ice, rtc_server
from tests.serverutil import url, wait_for


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_ice(monkeypatch)


def place(server: GameServer, eid: int, x: float, y: float) -> None:
    a = server.campaign.world.arrays
    a["x"][eid & SLOT_MASK] = x
    a["y"][eid & SLOT_MASK] = y


def worker_stats(server: GameServer) -> dict[str, int]:
    assert server.rtc is not None
    return server.rtc.links[0].stats


async def test_proximity_voice_push_to_talk_block_and_mute() -> None:
    async with rtc_server(rtc={"voice_radius": 100.0, "voice_every": 0.05}) as server:
        speaker = await ArbiterClient.connect(url(server), name="speaker")
        near = await ArbiterClient.connect(url(server), name="near")
        far = await ArbiterClient.connect(url(server), name="far")
        place(server, speaker.player, 200.0, 200.0)
        place(server, near.player, 250.0, 200.0)
        place(server, far.player, 800.0, 800.0)
        s_rtc = await speaker.start_webrtc(microphone=Tone(), voice_slots=2)
        n_rtc = await near.start_webrtc(voice_slots=2)
        f_rtc = await far.start_webrtc(voice_slots=2)
        assert s_rtc.up and n_rtc.up and f_rtc.up

        # Not talking yet (push-to-talk released): nobody hears the speaker, though it sends.
        await wait_for(lambda: worker_stats(server).get("voice_in", 0) > 10, 10)
        assert n_rtc.audio_received == 0 and worker_stats(server)["voice_out"] == 0

        speaker.talk(True)
        await wait_for(lambda: speaker.player in near.voice_slots, 5)
        await wait_for(lambda: n_rtc.audio_received > 25, 10)  # > 0.5 s of 20 ms frames
        assert max(n_rtc.audio_peak) > 2000  # the tone (amplitude 8000), not silence
        assert far.voice_slots in ([], [0, 0]) and f_rtc.audio_received == 0  # out of range
        assert near.player not in speaker.voice_slots  # near does not talk

        # Walking into range makes the far listener hear the speaker too.
        place(server, far.player, 200.0, 260.0)
        await wait_for(lambda: f_rtc.audio_received > 10, 10)

        # A server-side mute drops the speaker's audio at the server: it still arrives, is not forwarded.
        assert server.rtc is not None and server.rtc.mute("speaker") == 1
        await wait_for(lambda: near.voice_slots == [0, 0] and far.voice_slots == [0, 0], 5)
        beats = server.rtc.links[0].beats  # counters come with heartbeats: take one sent after the mute
        await wait_for(lambda: server.rtc is not None and server.rtc.links[0].beats >= beats + 2, 5)
        before = worker_stats(server)
        await wait_for(lambda: worker_stats(server)["voice_in"] > before["voice_in"] + 25, 5)
        after = worker_stats(server)
        assert after["voice_out"] == before["voice_out"]
        server.rtc.mute("speaker", False)
        await wait_for(lambda: speaker.player in near.voice_slots, 5)

        # A listener's block.
        near.block(speaker.player)
        await wait_for(lambda: near.voice_slots == [0, 0], 5)
        assert speaker.player in far.voice_slots
        # Push-to-talk released: silence for everyone.
        speaker.talk(False)
        await wait_for(lambda: far.voice_slots == [0, 0], 5)
        for c in (speaker, near, far):
            await c.close()
