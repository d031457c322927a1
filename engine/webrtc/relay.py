"""The tick process's side of WebRTC: relay worker processes, per-client routes, voice routing.

`WebRtcRelay` is the one object the game server holds for WebRTC (docs/webrtc.md). It

- starts `--webrtc-workers N` worker processes (engine/webrtc/worker.py) and restarts dead ones;
- answers the signaling of the session (netcode/signaling.py) by handing offers and candidates to a
  worker and the worker's answer back to the client over WebSocket;
- once a client's data channels are open, points the client's two sinks (engine/clients.py) at
  routes to its worker, so the very same snapshot sender and session write to WebRTC instead of
  the WebSocket; the worker's inputs come back into the same `GameServer.on_message`;
- keeps the tick safe: writes to a worker never await, a worker whose backlog passes its bound or
  whose heartbeat stops is killed, and its clients drop back to WebSocket with a reason;
- routes proximity voice: every `voice_every` seconds, which speakers each listener hears, from
  the replicator's AOI grid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.clients import Client, flush_session
from engine.webrtc.turn import ice_servers
from netcode import relay_ipc as ipc
from netcode.protocol import ErrorCode
from netcode.signaling import (
    MAX_VOICE_SLOTS,
    STATE_DOWN,
    STATE_UP,
    RtcCandidate,
    RtcClose,
    RtcOffer,
    SignalEvent,
    TurnRequest,
    VoiceControl,
    encode_answer,
    encode_rtc_state,
    encode_turn,
    encode_voice_slots,
)
from netcode.voice import assign_slots, nearest
from netcode.ws_server import WsServerConnection
from sim.entities import SLOT_MASK

if TYPE_CHECKING:
    from engine.host import Host
    from engine.server import GameServer

log = logging.getLogger("arbiter.webrtc")



@dataclass(slots=True)
class WebRtcConfig:
    workers: int = 0  # relay worker processes; 0: WebRTC off (signaling answered RTC_UNAVAILABLE)
    host_ips: tuple[str, ...] = ()  # addresses the workers gather host candidates on (): all but loopback
    turn_urls: tuple[str, ...] = ()  # e.g. "turn:turn.example.com:3478?transport=udp"
    turn_secret: str = ""  # coturn's static-auth-secret (env ARBITER_TURN_SECRET)
    turn_ttl: int = 3600  # seconds a TURN credential stays valid
    ice_timeout: float = 10.0  # data channels not open by then: the client stays on WebSocket
    clients_per_worker: int = 100
    voice_radius: float | None = None  # None: the game's view radius (AOI); 0: the whole world
    voice_every: float = 0.1  # seconds between voice routing passes
    worker_backlog: int = 512 * 1024  # bytes queued towards a worker beyond which it counts as stuck
    stall_timeout: float = 2.0  # a worker silent (no heartbeat) or stuck this long is killed
    restart_delay: float = 1.0
    log_level: str = "WARNING"


def strip_ws_header(frame: bytes | memoryview) -> bytes | memoryview:
    """The payload of one unmasked server WebSocket frame (the replicator's framed output)."""
    n = frame[1] & 0x7F
    return frame[2 if n < 126 else 4 if n == 126 else 10 :]


class WorkerLink(asyncio.Protocol):
    """One worker process and the Unix socket to it."""

    def __init__(self, relay: WebRtcRelay, index: int) -> None:
        self.relay = relay
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.reader = ipc.RecordReader()
        self.peers: dict[int, RtcPeer] = {}
        self.alive = False
        self.last_beat = 0.0
        self.over_since: float | None = None
        self.stats: dict[str, Any] = {}  # the worker's counters, from its newest heartbeat
        self.beats = 0
        self.records_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False

    # -- asyncio.Protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            records = self.reader.feed(data)
        except ipc.RecordError as exc:
            self.relay.worker_lost(self, f"relay worker sent a corrupt record ({exc})")
            return
        relay = self.relay
        for kind, cid, payload in records:
            relay.on_record(self, kind, cid, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.worker_lost(self, "relay worker died")

    # -- output (never awaits; batched into one write per loop iteration) -------------------------------
    @property
    def backlog(self) -> int:
        t = self.transport
        return self._out_bytes + (t.get_write_buffer_size() if t is not None else 0)

    def write(self, kind: int, cid: int, payload: bytes | memoryview = b"") -> bool:
        if not self.alive:
            return False
        if kind == ipc.FAST and self.backlog > self.relay.cfg.worker_backlog:
            self.dropped += 1  # superseded by the next snapshot anyway
            return False
        rec = ipc.pack(kind, cid, payload)
        self._out.append(rec)
        self._out_bytes += len(rec)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        self._out_bytes = 0
        t = self.transport
        if out and t is not None and not t.is_closing():
            data = b"".join(out)
            self.records_out += len(out)
            self.bytes_out += len(data)
            t.write(data)

    def kill(self) -> None:
        self.alive = False
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        if self.transport is not None:
            self.transport.abort()


class RtcPeer:
    """The tick process's view of one client's peer connection (one offer)."""

    __slots__ = ("cid", "client", "link", "opened_at", "sends_audio", "slot_eids", "slots", "up")

    def __init__(self, cid: int, client: Client, link: WorkerLink, now: float, offer: RtcOffer) -> None:
        self.cid = cid
        self.client = client
        self.link = link
        self.opened_at = now
        self.up = False
        self.sends_audio = offer.sends_audio
        n = min(offer.voice_slots, MAX_VOICE_SLOTS)
        self.slots = [0] * n  # speaker cid per receiving audio section
        self.slot_eids = [0] * n


class RtcRoute:
    """A client's sink (engine/clients.py `FrameSink`) through its relay worker: the unordered,
    unreliable data channel (`reliable=False`: snapshots) or the ordered, reliable one."""

    __slots__ = ("_kind", "peer")

    def __init__(self, peer: RtcPeer, reliable: bool) -> None:
        self.peer = peer
        self._kind = ipc.RELIABLE if reliable else ipc.FAST

    @property
    def is_open(self) -> bool:
        return self.peer.link.alive and self.peer.client.conn.is_open

    @property
    def write_buffer_size(self) -> int:
        # A worker's backlog is shared by all its clients; below its bound a client is not backlogged.
        link = self.peer.link
        backlog = link.backlog
        return backlog if backlog > link.relay.cfg.worker_backlog else 0

    def send_framed(self, data: bytes | memoryview) -> None:
        self.peer.link.write(self._kind, self.peer.cid, strip_ws_header(data))

    def send_parts(self, *parts: bytes, limit: int = 1 << 30) -> bool:
        if not self.is_open:
            return False
        return self.peer.link.write(self._kind, self.peer.cid, b"".join(parts))


class WebRtcRelay:
    """The relay workers of a process: shared by every campaign of a host; a client's inputs go to the
    campaign its connection joined, and voice is routed within each campaign."""

    def __init__(self, host: Host, cfg: WebRtcConfig) -> None:
        self.host = host
        self.cfg = cfg
        self.links: list[WorkerLink] = []
        self.peers: dict[WsServerConnection, RtcPeer] = {}
        self.talking: set[WsServerConnection] = set()
        self.muted: set[str] = set()  # accounts whose voice the server drops
        self._next_cid = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.counters = {"offers": 0, "up": 0, "fallbacks": 0, "ice_timeouts": 0, "worker_deaths": 0,
                         "worker_kills": 0, "restarts": 0, "voice_routes": 0}  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        for i in range(self.cfg.workers):
            link = WorkerLink(self, i)
            self.links.append(link)
            await self._spawn(link)
        self._task = asyncio.get_running_loop().create_task(self._monitor())

    async def _spawn(self, link: WorkerLink) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "engine.webrtc.worker", "--fd", str(child.fileno()),
               "--log-level", self.cfg.log_level]  # fmt: skip
        for ip in self.cfg.host_ips:
            cmd += ["--host-ip", ip]
        link.reader = ipc.RecordReader()
        link.proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        parent.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: link, sock=parent)
        link.alive = True
        link.over_since = None
        # The worker needs a moment to import aiortc; its first heartbeat is awaited as a grace.
        link.last_beat = loop.time() + 10.0
        log.info("WebRTC relay worker %d started (pid %d)", link.index, link.proc.pid)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        for peer in list(self.peers.values()):
            self._down(peer, "server shutting down")
        for link in self.links:
            link.alive = False
            proc = link.proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for link in self.links:
            proc = link.proc
            while proc is not None and proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if link.transport is not None:
                link.transport.close()

    # -- signaling (from GameServer.on_message) -----------------------------------------------------
    def signal(self, client: Client, ev: SignalEvent) -> None:
        conn = client.conn
        if type(ev) is RtcOffer:
            self._offer(client, ev)
        elif type(ev) is RtcCandidate:
            peer = self.peers.get(conn)
            if peer is not None:
                cand = {"c": ev.candidate, "mid": ev.mid, "ml": ev.mline}
                peer.link.write(ipc.CANDIDATE, peer.cid, json.dumps(cand).encode())
        elif type(ev) is RtcClose:
            peer = self.peers.get(conn)
            if peer is not None:
                self._down(peer, "closed by the client")
        elif type(ev) is TurnRequest:
            cfg = self.cfg
            servers = ice_servers(cfg.turn_urls, cfg.turn_secret, client.account or client.name, time.time(),
                                  cfg.turn_ttl)  # fmt: skip
            conn.send_parts(encode_turn(servers, cfg.turn_ttl))
        elif type(ev) is VoiceControl and ev.talk is not None:
            if ev.talk:
                self.talking.add(conn)
            else:
                self.talking.discard(conn)

    def _offer(self, client: Client, offer: RtcOffer) -> None:
        old = self.peers.get(client.conn)
        if old is not None:
            self._down(old, "replaced by a new offer", notify=False)
        link = self._pick_link()
        if link is None:
            client.session.notify(ErrorCode.RTC_UNAVAILABLE, "no WebRTC relay worker has room: stay on WebSocket")
            return
        self._next_cid = self._next_cid % 0xFFFFFFFF + 1
        peer = RtcPeer(self._next_cid, client, link, self.host.now(), offer)
        self.peers[client.conn] = peer
        link.peers[peer.cid] = peer
        self.counters["offers"] += 1
        audio = [m.direction for m in offer.media if m.kind == "audio"]
        link.write(ipc.OPEN, peer.cid, json.dumps({"sdp": offer.sdp, "audio": audio}).encode())
        if client.account in self.muted:
            link.write(ipc.MUTE, peer.cid, b"\x01")

    def _pick_link(self) -> WorkerLink | None:
        """The fullest live worker with room: a campaign's clients share a worker as long as they fit,
        so voice (forwarded within a worker) reaches everyone in range."""
        best = None
        for link in self.links:
            fits = link.alive and len(link.peers) < self.cfg.clients_per_worker
            if fits and (best is None or len(link.peers) > len(best.peers)):
                best = link
        return best

    def drop(self, client: Client) -> None:
        """The client's WebSocket is gone: so is its peer connection."""
        self.talking.discard(client.conn)
        peer = self.peers.get(client.conn)
        if peer is not None:
            self._down(peer, "connection closed", notify=False)

    def mute(self, account: str, on: bool = True) -> int:
        """Drop (or stop dropping) an account's voice at the server; returns its live peers."""
        if on:
            self.muted.add(account)
        else:
            self.muted.discard(account)
        n = 0
        for peer in self.peers.values():
            if peer.client.account == account:
                peer.link.write(ipc.MUTE, peer.cid, b"\x01" if on else b"\x00")
                n += 1
        return n

    # -- the workers' records -----------------------------------------------------------------------
    def on_record(self, link: WorkerLink, kind: int, cid: int, payload: bytes) -> None:
        if kind == ipc.BEAT:
            link.last_beat = self.host.now()
            link.beats += 1
            with contextlib.suppress(ValueError):
                link.stats = json.loads(payload)
            return
        peer = link.peers.get(cid)
        if peer is None:
            return  # a peer closed meanwhile (records in flight)
        client = peer.client
        if kind == ipc.INPUT:
            server = self.host.campaign_of(client)
            if server is not None:
                server.on_message(client.conn, payload, False)
        elif kind == ipc.ANSWER:
            client.conn.send_parts(encode_answer(payload.decode()))
        elif kind == ipc.UP:
            peer.up = True
            self.counters["up"] += 1
            client.unreliable = RtcRoute(peer, reliable=False)
            client.reliable = RtcRoute(peer, reliable=True)
            client.conn.send_parts(encode_rtc_state(STATE_UP))
        elif kind == ipc.DOWN:
            reason = payload.decode("utf-8", "replace")
            if reason.startswith("offer refused"):
                client.session.notify(ErrorCode.RTC_BAD_SIGNAL, reason)
                flush_session(client)
            self._down(peer, reason)

    def _down(self, peer: RtcPeer, reason: str, notify: bool = True) -> None:
        """Back to WebSocket: the client's sinks, its voice routes, a word to the client."""
        client = peer.client
        conn = client.conn
        if self.peers.get(conn) is peer:
            del self.peers[conn]
        peer.link.peers.pop(peer.cid, None)
        peer.link.write(ipc.CLOSE, peer.cid)
        if peer.up:
            self.counters["fallbacks"] += 1
        client.unreliable = conn
        client.reliable = conn
        for other in self.peers.values():  # nobody keeps hearing a speaker who is gone
            if peer.cid in other.slots:
                self._set_slots(other, [0 if c == peer.cid else c for c in other.slots])
        if notify and conn.is_open:
            conn.send_parts(encode_rtc_state(STATE_DOWN, reason))

    def worker_lost(self, link: WorkerLink, reason: str) -> None:
        if not link.alive and not link.peers:
            return
        was_alive = link.alive
        link.kill()
        if was_alive and not self._closing:
            self.counters["worker_deaths"] += 1
            log.warning("WebRTC relay worker %d: %s; %d clients back on WebSocket", link.index, reason,
                        len(link.peers))  # fmt: skip
        for peer in list(link.peers.values()):
            self._down(peer, reason)

    # -- the monitor: health, ICE time-outs, voice routing ------------------------------------------
    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        next_voice = 0.0
        restart_at: dict[int, float] = {}
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            for link in self.links:
                if link.proc is not None and link.proc.poll() is not None and link.alive:
                    self.worker_lost(link, f"relay worker exited ({link.proc.returncode})")
                if link.alive:
                    over = link.backlog > cfg.worker_backlog
                    link.over_since = (link.over_since or now) if over else None
                    stuck = link.over_since is not None and now - link.over_since > cfg.stall_timeout
                    if now - link.last_beat > cfg.stall_timeout or stuck:
                        self.counters["worker_kills"] += 1
                        self.worker_lost(link, "relay worker stalled" if not stuck else "relay worker backlogged")
                elif not self._closing:
                    at = restart_at.setdefault(link.index, now + cfg.restart_delay)
                    if now >= at:
                        del restart_at[link.index]
                        if link.proc is not None:
                            link.proc.wait()
                        self.counters["restarts"] += 1
                        await self._spawn(link)
            for peer in [p for p in self.peers.values() if not p.up and now - p.opened_at > cfg.ice_timeout]:
                self.counters["ice_timeouts"] += 1
                self._down(peer, f"WebRTC did not connect within {cfg.ice_timeout:g} s: staying on WebSocket")
            if now >= next_voice:
                next_voice = now + cfg.voice_every
                self.route_voice()

    def route_voice(self) -> None:
        """Who each listener hears: talking, unmuted, unblocked speakers of the same campaign on the
        listener's worker within the voice radius, nearest first, at most one per receiving audio section."""
        campaigns: dict[GameServer, list[RtcPeer]] = {}
        for p in self.peers.values():
            server = self.host.campaign_of(p.client)
            if server is not None:
                campaigns.setdefault(server, []).append(p)
        for server, peers in campaigns.items():
            self._route_voice(server, peers)

    def _route_voice(self, server: GameServer, peers: list[RtcPeer]) -> None:
        listeners = [p for p in peers if p.up and p.slots and p.client.eid >= 0]
        if not listeners:
            return
        speakers = [p for p in peers
                    if p.up and p.sends_audio and p.client.conn in self.talking and p.client.eid >= 0
                    and p.client.account not in self.muted]  # fmt: skip
        if not speakers:
            for lp in listeners:
                if any(lp.slots):
                    self._set_slots(lp, [0] * len(lp.slots))
            return
        px, py, grid, radius = self._positions(server)
        s_eid = np.array([p.client.eid for p in speakers], dtype=np.int64)
        s_slot = s_eid & SLOT_MASK
        sx, sy = px[s_slot], py[s_slot]
        by_eid = {p.client.eid: p for p in speakers}
        l_slot = np.array([p.client.eid & SLOT_MASK for p in listeners], dtype=np.int64)
        lx, ly = px[l_slot], py[l_slot]
        in_range: list[set[int]] | None = None
        if grid is not None and math.isfinite(radius):
            # The replicator's AOI grid of its last send: entities within the radius of each listener.
            offs, ids = grid.query(lx, ly, radius, np.array([p.client.eid for p in listeners], dtype=np.uint32))
            speaker_ids = set(by_eid)
            in_range = [speaker_ids.intersection(ids[offs[i] : offs[i + 1]].tolist()) for i in range(len(listeners))]
        for i, lp in enumerate(listeners):
            exclude = set(lp.client.session.signal.blocks)
            exclude.add(lp.client.eid)
            if in_range is not None:
                pick = [j for j, s in enumerate(speakers) if s.client.eid in in_range[i] and s.link is lp.link]
            else:
                pick = [j for j, s in enumerate(speakers) if s.link is lp.link]
            idx = np.array(pick, dtype=np.int64)
            eids = nearest(float(lx[i]), float(ly[i]), s_eid[idx], sx[idx], sy[idx], radius, len(lp.slots), exclude)
            wanted = [by_eid[e].cid for e in eids]
            slots = assign_slots(lp.slots, wanted)
            if slots != lp.slots:
                self._set_slots(lp, slots)

    def _set_slots(self, lp: RtcPeer, slots: list[int]) -> None:
        cid_eid = {p.cid: p.client.eid for p in self.peers.values()}
        lp.slots = slots
        lp.slot_eids = [cid_eid.get(c, 0) if c else 0 for c in slots]
        self.counters["voice_routes"] += 1
        lp.link.write(ipc.ROUTE, lp.cid, ipc.pack_route(slots))
        lp.client.reliable.send_parts(encode_voice_slots(lp.slot_eids))

    def _positions(self, server: GameServer) -> tuple[np.ndarray, np.ndarray, Any, float]:
        """Positions by entity slot, the AOI grid (None without AOI) and the voice radius."""
        rep = server.sender.replicator
        radius = self.cfg.voice_radius
        if rep is not None and rep.tick >= 0:
            if radius is None:
                radius = rep.radius or 0.0
            return rep.px, rep.py, rep.grid, (radius or math.inf)
        records = server.campaign.replicate()
        cap = server.campaign.game.capacity
        px = np.full(cap, np.nan)
        py = np.full(cap, np.nan)
        slots = (records["id"].astype(np.int64)) & SLOT_MASK
        px[slots] = records["x"]
        py[slots] = records["y"]
        return px, py, None, (radius or math.inf)

    # -- figures --------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "peers": len(self.peers),
            "peers_up": sum(1 for p in self.peers.values() if p.up),
            "workers": [
                {
                    "index": lk.index,
                    "alive": lk.alive,
                    "pid": lk.proc.pid if lk.proc else None,
                    "peers": len(lk.peers),
                    "backlog": lk.backlog,
                    "dropped": lk.dropped,
                    "records_out": lk.records_out,
                    **lk.stats,
                }
                for lk in self.links
            ],
        }


def turn_secret_from_env() -> str:
    return os.environ.get("ARBITER_TURN_SECRET", "")
