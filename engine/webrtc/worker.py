"""A WebRTC relay worker: a process of its own that holds aiortc peer connections for clients of the
tick process, and relays their data channels and their voice.

    python -m engine.webrtc.worker --fd N [--host-ip 127.0.0.1 ...]

The tick process starts it (engine/webrtc/relay.py) with one end of a Unix socket pair as fd N and
talks to it in records (netcode/relay_ipc.py). aiortc costs ~60 µs per message and collapses above a
few thousand messages per second per process (notes: stack probe §5), so it never runs in the tick
process: a slow or dead worker costs its own clients their WebRTC path (they go back to WebSocket),
never a tick.

Voice is forwarded as an SFU does: the Opus packets a speaker sends are handed, undecoded, to the
audio senders of the listeners the tick process routes them to. aiortc's receivers always decode
(its `decoder_worker` thread turns RTP into PCM) and its senders re-encode whatever PCM frame a track
yields; but a sender also accepts an encoded `av.Packet` from a track and only packetizes it
(`Encoder.pack`). This process therefore replaces the receivers' decoder thread by one that passes
the encoded frame on as an `av.Packet` (`_passthrough_decoder_worker`): no Opus decode or encode
happens here at all (bench/webrtc.py measures it against aiortc's MediaRelay, which re-encodes per
subscriber).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import rtcrtpreceiver as _rtcrtpreceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from netcode import relay_ipc as ipc
from netcode.ice import use_host_addresses

log = logging.getLogger("arbiter.webrtc.worker")

FAST_LABEL = "arbiter-u"  # negotiated id 0: unordered, maxRetransmits 0 (snapshots, inputs)
RELIABLE_LABEL = "arbiter-r"  # negotiated id 1: ordered, reliable (events, errors, voice slots)
FAST_ID = 0
RELIABLE_ID = 1
# aiortc burns CPU and abandons chunks once its SCTP queue backs up (stack probe §5): a snapshot that
# finds more than this already queued is dropped (the next one supersedes it).
FAST_BUFFER_LIMIT = 8 * 1024
RELIABLE_BUFFER_LIMIT = 256 * 1024  # beyond this the client does not read: its peer is closed
MAX_INBOUND = 4096 + 512  # a data channel message larger than any valid client frame is dropped
IN_RATE = 240.0  # messages per second per peer forwarded to the tick process (it rate-limits too)
IN_BURST = 120.0
SLOT_QUEUE = 8  # Opus packets (160 ms) a listener slot may hold before the oldest is dropped
LINK_BACKLOG = 1 << 20  # bytes queued towards the tick process beyond which inputs are dropped
OPUS_TIME_BASE = fractions.Fraction(1, 48000)
OPUS_FRAME = 960  # samples of a 20 ms Opus frame: the pts step assumed after a speaker switch


def _passthrough_decoder_worker(
    loop: asyncio.AbstractEventLoop, input_q: queue.Queue[Any], output_q: asyncio.Queue[Any], _: threading.Event
) -> None:
    """Stand-in for aiortc's `decoder_worker`: encoded frames go to the track as `av.Packet`s."""
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
            return
        _codec, frame = task
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = OPUS_TIME_BASE
        asyncio.run_coroutine_threadsafe(output_q.put(packet), loop)


def enable_passthrough() -> None:
    _rtcrtpreceiver.decoder_worker = _passthrough_decoder_worker  # type: ignore[assignment]


@dataclass(slots=True)
class Counters:
    bad_candidates: int = 0
    fast_drop: int = 0  # snapshots dropped: the channel's buffer was over FAST_BUFFER_LIMIT
    fast_out: int = 0
    inputs: int = 0
    inputs_dropped: int = 0
    offers_refused: int = 0
    reliable_out: int = 0
    voice_drop: int = 0  # packets dropped from a full listener slot
    voice_in: int = 0  # packets received from speakers
    voice_out: int = 0  # packets handed to listener slots (forwarded)


class SlotTrack(MediaStreamTrack):
    """One of a listener's receiving audio sections: yields the encoded packets of whichever speaker
    the tick process routed to it, with timestamps made continuous across speaker switches."""

    kind = "audio"

    def __init__(self, counters: Counters) -> None:
        super().__init__()
        self._q: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self._speaker = 0
        self._offset = 0
        self._next_pts = 0
        self._counters = counters

    def push(self, speaker: int, packet: av.Packet) -> None:
        pts = int(packet.pts or 0)
        if speaker != self._speaker:
            self._speaker = speaker
            self._offset = self._next_pts - pts
        out = av.Packet(bytes(packet))
        out.pts = pts + self._offset
        out.time_base = OPUS_TIME_BASE
        self._next_pts = out.pts + OPUS_FRAME
        q = self._q
        if q.qsize() >= SLOT_QUEUE:
            q.get_nowait()
            self._counters.voice_drop += 1
        q.put_nowait(out)
        self._counters.voice_out += 1

    async def recv(self) -> av.Packet:
        packet = await self._q.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        super().stop()
        self._q.put_nowait(None)


class Peer:
    """One client's peer connection in this worker."""

    def __init__(self, worker: Worker, cid: int, audio: list[str]) -> None:
        self.worker = worker
        self.cid = cid
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.fast: RTCDataChannel = self.pc.createDataChannel(
            FAST_LABEL, ordered=False, maxRetransmits=0, negotiated=True, id=FAST_ID
        )
        self.reliable: RTCDataChannel = self.pc.createDataChannel(RELIABLE_LABEL, negotiated=True, id=RELIABLE_ID)
        self.audio = audio  # the client's direction of each of its audio sections, in order
        self.slots: list[SlotTrack] = []
        self.muted = False
        self.ready = False  # remote description applied: candidates can be added
        self.up = False
        self.closed = False
        self.early_candidates: list[dict[str, Any]] = []
        self.tokens = IN_BURST
        self.tokens_at = time.monotonic()
        self.tasks: set[asyncio.Task[None]] = set()
        for ch in (self.fast, self.reliable):
            ch.on("open", self._channel_open)
            ch.on("message", self._message)
        self.pc.on("connectionstatechange", self._state)
        self.pc.on("track", self._track)

    # -- setup --------------------------------------------------------------------------------------
    async def answer(self, sdp: str) -> None:
        pc = self.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            for t, direction in zip(audio, self.audio, strict=False):
                if direction in ("sendrecv", "recvonly"):
                    self._add_slot(t)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, AssertionError, KeyError, ... on bad SDP
            self.worker.counters.offers_refused += 1
            self.worker.send(ipc.DOWN, self.cid, f"offer refused: {type(exc).__name__}: {exc}"[:200].encode())
            await self.close()
            return
        self.ready = True
        self.worker.send(ipc.ANSWER, self.cid, pc.localDescription.sdp.encode())
        for c in self.early_candidates:
            await self.candidate(c)
        self.early_candidates.clear()

    def _add_slot(self, t: RTCRtpTransceiver) -> None:
        slot = SlotTrack(self.worker.counters)
        t.sender.replaceTrack(slot)
        t.direction = "sendrecv"
        self.slots.append(slot)

    async def candidate(self, c: dict[str, Any]) -> None:
        if not self.ready:
            self.early_candidates.append(c)
            return
        text = str(c.get("c", ""))
        if not text:
            return  # end of candidates: aiortc needs no notice
        try:
            cand = candidate_from_sdp(text.split(":", 1)[1])
            cand.sdpMid = c.get("mid")
            cand.sdpMLineIndex = c.get("ml")
            if cand.sdpMid is None and cand.sdpMLineIndex is None:
                cand.sdpMLineIndex = 0
            await self.pc.addIceCandidate(cand)
        except Exception:  # a candidate aiortc cannot use is ignored, as browsers do
            self.worker.counters.bad_candidates += 1

    # -- events -------------------------------------------------------------------------------------
    def _channel_open(self) -> None:
        if not self.up and self.fast.readyState == "open" and self.reliable.readyState == "open":
            self.up = True
            self.worker.send(ipc.UP, self.cid)

    def _message(self, message: bytes | str) -> None:
        w = self.worker
        data = message.encode() if isinstance(message, str) else message
        now = time.monotonic()
        self.tokens = min(IN_BURST, self.tokens + (now - self.tokens_at) * IN_RATE)
        self.tokens_at = now
        if len(data) > MAX_INBOUND or self.tokens < 1.0 or w.backlog() > LINK_BACKLOG:
            w.counters.inputs_dropped += 1
            return
        self.tokens -= 1.0
        w.counters.inputs += 1
        w.send(ipc.INPUT, self.cid, data)

    def _state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed") and not self.closed:
            self.worker.send(ipc.DOWN, self.cid, f"peer connection {state}".encode())
            self._spawn(self.close())

    def _track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._pump(track))

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Forward this speaker's packets to the slots of the listeners routed to it."""
        counters = self.worker.counters
        listeners = self.worker.listeners
        cid = self.cid
        with contextlib.suppress(MediaStreamError):
            while True:
                packet = await track.recv()
                counters.voice_in += 1
                if not isinstance(packet, av.Packet):
                    continue
                if self.muted:
                    continue
                for slot in listeners.get(cid, ()):
                    slot.push(cid, packet)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- output -------------------------------------------------------------------------------------
    def send_fast(self, payload: bytes) -> None:
        ch = self.fast
        if ch.readyState != "open" or ch.bufferedAmount > FAST_BUFFER_LIMIT:
            self.worker.counters.fast_drop += 1
            return
        ch.send(payload)
        self.worker.counters.fast_out += 1

    def send_reliable(self, payload: bytes) -> None:
        ch = self.reliable
        if ch.readyState != "open":
            return
        if ch.bufferedAmount > RELIABLE_BUFFER_LIMIT:
            self.worker.send(ipc.DOWN, self.cid, b"reliable channel backlog: the client does not read")
            self._spawn(self.close())
            return
        ch.send(payload)
        self.worker.counters.reliable_out += 1

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.worker.forget(self)
        for slot in self.slots:
            slot.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()


class Worker(asyncio.Protocol):
    def __init__(self) -> None:
        self.peers: dict[int, Peer] = {}
        self.listeners: dict[int, list[SlotTrack]] = {}  # speaker cid -> the slots it is routed to
        self.routes: dict[int, list[int]] = {}  # listener cid -> speaker cid per slot
        self.counters = Counters()
        self.reader = ipc.RecordReader()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the link to the tick process ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)  # the tick process is gone: so is this worker

    def backlog(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None else 0

    def send(self, kind: int, cid: int, payload: bytes = b"") -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(ipc.pack(kind, cid, payload))

    def data_received(self, data: bytes) -> None:
        try:
            records = self.reader.feed(data)
        except ipc.RecordError as exc:
            log.error("corrupt link from the tick process (%s): exiting", exc)
            if self.transport is not None:
                self.transport.close()
            return
        for kind, cid, payload in records:
            self._record(kind, cid, payload)

    def _record(self, kind: int, cid: int, payload: bytes) -> None:
        peer = self.peers.get(cid)
        if kind == ipc.FAST:
            if peer is not None:
                peer.send_fast(payload)
        elif kind == ipc.RELIABLE:
            if peer is not None:
                peer.send_reliable(payload)
        elif kind == ipc.OPEN:
            if peer is not None:
                self._spawn(peer.close())
            spec = json.loads(payload)
            peer = Peer(self, cid, list(spec.get("audio", [])))
            self.peers[cid] = peer
            self._spawn(peer.answer(spec["sdp"]))
        elif kind == ipc.CANDIDATE:
            if peer is not None:
                self._spawn(peer.candidate(json.loads(payload)))
        elif kind == ipc.CLOSE:
            if peer is not None:
                self._spawn(peer.close())
        elif kind == ipc.ROUTE:
            self._route(cid, ipc.unpack_route(payload))
        elif kind == ipc.MUTE and peer is not None:
            peer.muted = payload == b"\x01"

    def _route(self, listener: int, speakers: list[int]) -> None:
        peer = self.peers.get(listener)
        if peer is None:
            return
        self._unroute(listener)
        self.routes[listener] = speakers
        for slot, speaker in zip(peer.slots, speakers, strict=False):
            if speaker:
                self.listeners.setdefault(speaker, []).append(slot)

    def _unroute(self, listener: int) -> None:
        old = self.routes.pop(listener, None)
        peer = self.peers.get(listener)
        if not old or peer is None:
            return
        mine = set(map(id, peer.slots))
        for speaker in old:
            slots = self.listeners.get(speaker)
            if slots:
                slots[:] = [s for s in slots if id(s) not in mine]

    def forget(self, peer: Peer) -> None:
        self._unroute(peer.cid)
        self.listeners.pop(peer.cid, None)
        if self.peers.get(peer.cid) is peer:
            del self.peers[peer.cid]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def beat(self) -> None:
        while True:
            stats: dict[str, Any] = asdict(self.counters)
            stats["peers"] = len(self.peers)
            stats["up"] = sum(1 for p in self.peers.values() if p.up)
            stats["cpu_s"] = round(time.process_time(), 3)
            self.send(ipc.BEAT, 0, json.dumps(stats).encode())
            await asyncio.sleep(ipc.BEAT_INTERVAL)

    async def shutdown(self) -> None:
        for peer in list(self.peers.values()):
            await peer.close()


async def run(fd: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    worker = Worker()
    await loop.create_unix_connection(lambda: worker, sock=sock)
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    beat = asyncio.ensure_future(worker.beat())
    await asyncio.wait([worker.done, stop], return_when=asyncio.FIRST_COMPLETED)
    beat.cancel()
    await asyncio.wait_for(worker.shutdown(), 5.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.webrtc.worker")
    p.add_argument("--fd", type=int, required=True, help="the Unix socket to the tick process")
    p.add_argument("--host-ip", action="append", default=[], help="gather host candidates on this address")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format=f"webrtc-worker[{os.getpid()}] %(levelname)s %(message)s")
    # aiortc and aioice log every failed check and unparsable packet: garbage at our UDP ports would
    # otherwise become a log flood.
    for name in ("aiortc", "aioice"):
        logging.getLogger(name).setLevel(logging.ERROR)
    enable_passthrough()
    if args.host_ip:
        use_host_addresses(args.host_ip)
    try:
        import uvloop

        uvloop.run(run(args.fd))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
