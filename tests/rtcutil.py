"""Helpers for the WebRTC tests: a coturn, a server with relay workers, a tone track, loopback ICE."""

from __future__ import annotations

import contextlib
import fractions
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import AudioStreamTrack

from engine.server import GameServer
from engine.webrtc.coturn import Coturn, CoturnError
from engine.webrtc.relay import WebRtcConfig
from netcode.ice import use_host_addresses
from tests.serverutil import running_server

TURN_SECRET = "arbiter-test-secret"


def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client peers in this process gather host candidates on 127.0.0.1 (undone after the test)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    use_host_addresses(["127.0.0.1"])


@contextlib.contextmanager
def coturn(loopback_peers: bool = True) -> Iterator[Coturn]:
    try:
        turn = Coturn.start(TURN_SECRET, loopback_peers=loopback_peers)
    except CoturnError as exc:
        # .ci/run installs coturn: in CI (ARBITER_REQUIRE_SERVICES=1) a missing one is a failure.
        if os.environ.get("ARBITER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{exc} (ARBITER_REQUIRE_SERVICES=1)")
        pytest.skip(str(exc))
    try:
        yield turn
    finally:
        turn.stop()


@contextlib.asynccontextmanager
async def rtc_server(turn: Coturn | None = None, **overrides: Any) -> AsyncIterator[GameServer]:
    rtc = WebRtcConfig(
        workers=overrides.pop("workers", 1),
        host_ips=("127.0.0.1",),
        turn_urls=(turn.url,) if turn else (),
        turn_secret=TURN_SECRET if turn else "",
        **overrides.pop("rtc", {}),
    )
    overrides.setdefault("game", "wander")
    async with running_server(webrtc=rtc, **overrides) as server:
        yield server


class Tone(AudioStreamTrack):
    """A paced 20 ms mono sine wave at 48 kHz (a generated microphone)."""

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self.hz = hz
        self.n = 0

    async def recv(self) -> av.AudioFrame:
        await super().recv()  # paces at real time, one frame per 20 ms (of 8 kHz silence)
        t = (np.arange(960) + self.n) / 48000.0
        pcm = (np.sin(2 * np.pi * self.hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.n
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 960
        return frame

