"""The Python SDK's WebRTC path: move a connected `ArbiterClient` onto data channels, and talk.

    client = await ArbiterClient.connect(url, name="ada")
    ice = await client.request_turn()                     # time-limited TURN credentials
    rtc = await client.start_webrtc(ice, relay_only=True, microphone=track, voice_slots=2)
    if rtc.up: ...                                        # snapshots now arrive over WebRTC

The offer goes over the client's WebSocket (netcode/signaling.py); the server's relay worker
answers; once both data channels are open the server says "up" and from then on snapshots come on
the unordered channel, events and errors on the ordered one, and thrust inputs leave on the
unordered channel (inputs carrying an action take the ordered one: they must not be lost). If the
channels do not open, or the server says "down", everything stays on, or goes back to, the
WebSocket; nothing needs to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from netcode.signaling import STATE_DOWN, STATE_UP, RtcAnswer, RtcState, encode_offer, encode_rtc_close

# The same negotiated channels as the relay worker (engine/webrtc/worker.py).
FAST_LABEL = "arbiter-u"
RELIABLE_LABEL = "arbiter-r"
FAST_ID = 0
RELIABLE_ID = 1


def _ice_server(d: dict[str, Any]) -> RTCIceServer:
    return RTCIceServer(urls=d["urls"], username=d.get("username"), credential=d.get("credential"))


class RtcLink:
    """One client's peer connection to the server's relay worker."""

    def __init__(
        self,
        send_ws: Callable[[bytes], None],
        on_message: Callable[[bytes], None],
        ice: Sequence[dict[str, Any]] = (),
        *,
        relay_only: bool = False,
        microphone: MediaStreamTrack | None = None,
        voice_slots: int = 0,
    ) -> None:
        self._send_ws = send_ws
        self._on_message = on_message
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        # iceServers=[] explicitly: aiortc's default is a public STUN server.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[_ice_server(d) for d in ice], iceTransportPolicy=policy)
        )
        self.fast: RTCDataChannel = self.pc.createDataChannel(
            FAST_LABEL, ordered=False, maxRetransmits=0, negotiated=True, id=FAST_ID
        )
        self.reliable: RTCDataChannel = self.pc.createDataChannel(RELIABLE_LABEL, negotiated=True, id=RELIABLE_ID)
        self.fast.on("message", self._fast_message)
        self.reliable.on("message", self._reliable_message)
        if microphone is not None or voice_slots:
            # The first audio section carries the microphone (and receives slot 0), the others receive.
            self.pc.addTransceiver(microphone or "audio", direction="sendrecv" if microphone else "recvonly")
            for _ in range(max(0, voice_slots - 1)):
                self.pc.addTransceiver("audio", direction="recvonly")
        self.audio_tracks: list[MediaStreamTrack] = []
        self.audio_frames: list[int] = []  # frames received per receiving audio section
        self.audio_peak: list[int] = []  # loudest sample (s16) of the newest frame, per section
        self.pc.on("track", self._track)
        self.up = False
        self.down_reason = ""
        self.fast_in = 0
        self.reliable_in = 0
        loop = asyncio.get_running_loop()
        self._state: asyncio.Future[bool] = loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, timeout: float = 15.0) -> bool:
        """Offer, wait for "up" (True) or "down"/time-out (False: the client stays on WebSocket)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._send_ws(encode_offer(self.pc.localDescription.sdp))
        try:
            return await asyncio.wait_for(asyncio.shield(self._state), timeout)
        except TimeoutError:
            self._send_ws(encode_rtc_close())
            await self.close()
            return False

    # -- from the server's WebSocket messages ---------------------------------------------------------
    def on_signal(self, ev: RtcAnswer | RtcState) -> None:
        if type(ev) is RtcAnswer:
            self._spawn(self._answer(ev.sdp))
        elif type(ev) is RtcState:
            if ev.state == STATE_UP:
                self.up = True
                if not self._state.done():
                    self._state.set_result(True)
            elif ev.state == STATE_DOWN:
                self.up = False
                self.down_reason = ev.reason
                if not self._state.done():
                    self._state.set_result(False)
                self._spawn(self.close())

    async def _answer(self, sdp: str) -> None:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        except Exception as exc:  # a broken answer: stay on WebSocket
            self.down_reason = f"bad answer: {exc}"
            if not self._state.done():
                self._state.set_result(False)

    # -- data -----------------------------------------------------------------------------------------
    def _fast_message(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            self.fast_in += 1
            self._on_message(message)

    def _reliable_message(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            self.reliable_in += 1
            self._on_message(message)

    def send(self, payload: bytes, reliable: bool = False) -> bool:
        """Send on a data channel; False when it is not open (the caller uses the WebSocket)."""
        ch = self.reliable if reliable else self.fast
        if not self.up or ch.readyState != "open":
            return False
        ch.send(payload)
        return True

    # -- voice ----------------------------------------------------------------------------------------
    def _track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        i = len(self.audio_tracks)
        self.audio_tracks.append(track)
        self.audio_frames.append(0)
        self.audio_peak.append(0)
        self._spawn(self._count(track, i))

    async def _count(self, track: MediaStreamTrack, i: int) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.audio_frames[i] += 1
                if isinstance(frame, av.AudioFrame):
                    pcm = np.abs(frame.to_ndarray())
                    self.audio_peak[i] = int(pcm.max()) if pcm.size else 0

    @property
    def audio_received(self) -> int:
        return sum(self.audio_frames)

    # -- lifecycle ------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.up = False
        await self.pc.close()
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()

    async def stats(self) -> dict[str, Any]:
        """aiortc's getStats() as plain dicts (transport, data channels, inbound audio)."""
        report = await self.pc.getStats()
        return {k: vars(v) for k, v in report.items()}
