"""WebRTC figures: the worker link, delta encoding under loss, data-channel clients per relay worker,
input→ack latency over data channels vs WebSocket with and without packet loss, voice forwarding.

    python -m bench.webrtc [--json] [--quick] [--clients 25,50,100] [--seconds 10] [--sections ...]

Sections (all on 127.0.0.1; the game server always runs as `arbiter serve` in its own process, with
its relay worker as a process of its own; clients run in separate processes):

- ipc: cost of the tick→worker link (netcode/relay_ipc.py over a Unix stream socket), per record,
  one way, batched as the snapshot sender batches them; the decision "Unix socket, not a ring".
- delta_loss: what acknowledged-baseline delta encoding saves, at 0, 5 and 20 % loss (bench.bandwidth's
  model: every delta is against a snapshot the client acknowledged, so a lost snapshot never breaks
  the next one).
- capacity: N data-channel clients on ONE relay worker, inputs at 20 Hz up, snapshots at 20 Hz down;
  loss each way, worker and tick-process CPU per client. The target is >= 100 clients at < 1 % loss.
- latency: input→ack latency (send of input seq s to the first snapshot acknowledging >= s), one
  WebSocket client and one data-channel client side by side, at 0 % and 5 % packet loss. Loss is real
  kernel packet loss: the run happens in a network namespace whose loopback drops 5 % of packets
  (nftables `numgen random`), so TCP retransmits and SCTP/DTLS/ICE lose what they lose. Needs root
  and nft; skipped otherwise.
- voice: S speakers (pre-encoded Opus, so the clients stay cheap) heard by L listeners through one
  worker; worker CPU per forwarded stream; and in one process the same 1→4 fan-out through aiortc's
  MediaRelay (decode + re-encode) vs the worker's pass-through.

Writes bench/results/webrtc.json. The machine is shared: figures are indicative (say so when quoting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.tun_link import TunLink
from engine.security.auth import KeyRing, TokenIssuer
from netcode.ice import use_host_addresses

RESULTS = Path(__file__).resolve().parent / "results" / "webrtc.json"
ROOT = Path(__file__).resolve().parent.parent
OPUS_TB = fractions.Fraction(1, 48000)


# --------------------------------------------------------------------------- a server in its own process


# Servers run with join tokens on (the admin token reads /stats/full, where the relay workers' figures
# are); the secret travels to the client processes in the environment.
os.environ.setdefault("ARBITER_BENCH_SECRET", secrets.token_hex(16))
_ISSUER = TokenIssuer(KeyRing.single(os.environ["ARBITER_BENCH_SECRET"]))


def token(name: str, role: str = "player") -> str:
    return _ISSUER.issue(name, "default", role=role, name=name if role == "player" else None, ttl=3600)


class ServerProc:
    def __init__(self, *extra: str, workers: int = 1, host: str = "127.0.0.1", prefix: tuple[str, ...] = ()) -> None:
        cmd = [*prefix, sys.executable, "-m", "engine.cli", "--log-level", "WARNING", "serve", "--game", "wander",
               "--host", host, "--port", "0", "--data-dir", "", "--fairplay", "off", "--webrtc-workers", str(workers),
               "--webrtc-ip", host, "--set", "npcs=200", "--max-players", "400", *extra]  # fmt: skip
        env = {**os.environ, "ARBITER_JWT_SECRET": os.environ["ARBITER_BENCH_SECRET"]}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"ws://[0-9.]+:(\d+)/", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(m.group(1))
        self.url = f"ws://{host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/stats/full")
        req.add_header("Authorization", f"Bearer {token('bench-admin', role='admin')}")
        with urllib.request.urlopen(req, timeout=5) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def worker0(stats: dict[str, Any]) -> dict[str, Any]:
    w: dict[str, Any] = stats["webrtc"]["workers"][0]
    return w


# --------------------------------------------------------------------------- client processes


class PreEncodedTone:
    """An audio track that yields pre-encoded Opus packets at real time (a cheap speaker)."""

    kind = "audio"

    def __new__(cls) -> Any:
        import av
        from aiortc import MediaStreamTrack

        class _Track(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                enc = av.CodecContext.create("libopus", "w")
                enc.sample_rate = 48000
                enc.layout = "stereo"
                enc.format = "s16"
                enc.open()
                t = np.arange(960 * 50) / 48000.0
                pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
                self.packets: list[bytes] = []
                for i in range(50):
                    chunk = np.repeat(pcm[i * 960 : (i + 1) * 960], 2).reshape(1, -1)
                    frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
                    frame.sample_rate = 48000
                    frame.pts = i * 960
                    self.packets += [bytes(p) for p in enc.encode(frame)]
                self.n = 0
                self.start: float | None = None

            async def recv(self) -> Any:
                loop = asyncio.get_running_loop()
                if self.start is None:
                    self.start = loop.time()
                wait = self.start + self.n * 0.02 - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                p = av.Packet(self.packets[self.n % len(self.packets)])
                p.pts = self.n * 960
                p.time_base = OPUS_TB
                self.n += 1
                return p

        return _Track()


async def _client_proc(args: argparse.Namespace) -> dict[str, Any]:
    """One process of bench clients: connect, move to WebRTC, send inputs at 20 Hz, count."""
    from netcode.client import ArbiterClient

    use_host_addresses(["127.0.0.1"])
    if args.role in ("listener",):
        from engine.webrtc.worker import enable_passthrough

        enable_passthrough()  # count received Opus packets without decoding them: the client stays cheap
    loop = asyncio.get_running_loop()
    clients: list[ArbiterClient] = []
    for i in range(args.n):
        name = f"{args.role[0]}{args.base + i}"
        c = await ArbiterClient.connect(args.url, name=name, token=token(name))
        clients.append(c)
    ups = 0
    for c in clients:
        mic = PreEncodedTone() if args.role == "speaker" else None
        slots = 4 if args.role == "listener" else 0
        rtc = await c.start_webrtc(microphone=mic, voice_slots=slots, timeout=30.0)
        ups += rtc.up
        if args.role == "speaker":
            c.talk(True)
    print(json.dumps({"ready": ups}), flush=True)
    t0, t1 = args.t0, args.t0 + args.seconds
    ticks: list[list[int]] = [[] for _ in clients]
    while time.time() < t0:
        await asyncio.sleep(0.01)
    for c, tk in zip(clients, ticks, strict=True):
        c.on_snapshot = lambda snap, tk=tk: tk.append(snap.tick)
    fast0 = [c.rtc.fast_in if c.rtc else 0 for c in clients]
    audio0 = [c.rtc.audio_received if c.rtc else 0 for c in clients]
    sent = 0
    k = 0
    start = loop.time()
    while time.time() < t1:
        for c in clients:
            c.send_input(0.3, 0.1)
            sent += 1
        k += 1
        await asyncio.sleep(max(0.0, start + k * 0.05 - loop.time()))
    for c in clients:
        c.on_snapshot = None
    fast = sum((c.rtc.fast_in if c.rtc else 0) - f for c, f in zip(clients, fast0, strict=True))
    # Snapshots the server sent this client in the window: one per send interval of its group
    # (tick_rate / send_rate ticks apart) between the first and last one it received.
    step = clients[0].welcome.tick_rate // clients[0].welcome.send_rate if clients and clients[0].welcome else 3
    expected = sum((tk[-1] - tk[0]) // step + 1 for tk in ticks if tk)
    received = sum(len(set(tk)) for tk in ticks)
    audio = sum((c.rtc.audio_received if c.rtc else 0) - a for c, a in zip(clients, audio0, strict=True))
    out = {"ready": ups, "inputs_sent": sent, "snapshots_dc": fast, "audio_packets": audio,
           "snapshots_expected": expected, "snapshots_received": received,
           "cpu_s": time.process_time()}  # fmt: skip
    for c in clients:
        with contextlib.suppress(Exception):
            await c.close()
    return out


def spawn_clients(url: str, n: int, per_proc: int, seconds: float, t0: float, role: str = "player") -> list[Any]:
    procs = []
    for base in range(0, n, per_proc):
        cmd = [sys.executable, "-m", "bench.webrtc", "--client-proc", "--url", url, "--n", str(min(per_proc, n - base)),
               "--base", str(base), "--seconds", str(seconds), "--t0", str(t0), "--role", role]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT))
    return procs


def collect(procs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for p in procs:
        lines = [json.loads(x) for x in p.communicate(timeout=300)[0].splitlines() if x.startswith("{")]
        out.append(lines[-1] if lines else {})
    return out


def wait_ready(procs: list[Any]) -> int:
    ready = 0
    for p in procs:
        line = p.stdout.readline()
        ready += json.loads(line)["ready"] if line.startswith("{") else 0
    return ready


# --------------------------------------------------------------------------- sections


def bench_ipc(records: int = 200_000, batch: int = 100, size: int = 120) -> dict[str, Any]:
    """Tick side: pack + batched write; worker side (a child process): read + parse."""
    from netcode import relay_ipc as ipc

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    code = ("import socket,sys,time;from netcode import relay_ipc as ipc;s=socket.socket(fileno=int(sys.argv[1]));"
            "r=ipc.RecordReader();n=0;c0=time.process_time()\n"
            "while True:\n d=s.recv(1<<20)\n if not d: break\n n+=len(r.feed(d))\n"
            "print(n, time.process_time()-c0)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(child.fileno())], pass_fds=(child.fileno(),),
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    child.close()
    payload = os.urandom(size)
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(0, records, batch):
        parent.sendall(b"".join(ipc.pack(ipc.FAST, i + j, payload) for j in range(batch)))
    parent.close()
    tick_cpu = time.process_time() - c0
    got, worker_cpu = proc.communicate(timeout=60)[0].split()
    wall = time.perf_counter() - w0
    return {"records": records, "payload_bytes": size, "batch": batch, "received": int(got),
            "tick_side_us_per_record": round(tick_cpu / records * 1e6, 3),
            "worker_side_us_per_record": round(float(worker_cpu) / records * 1e6, 3),
            "records_per_s": round(records / wall)}  # fmt: skip


def bench_delta_loss(quick: bool) -> list[dict[str, Any]]:
    from bench.bandwidth import run
    from netcode.replication.warm import warmup
    from sim.registry import make_game

    warmup()
    make_game("wander").warmup()
    rows = []
    for loss in (0.0, 0.05, 0.2):
        for r in run(50 if quick else 200, 300 if quick else 1000, 3.0 if quick else 10.0, 100.0, loss, 42):
            if r["mode"] in ("full_raw", "full_delta", "aoi_delta"):
                rows.append({k: r[k] for k in ("mode", "clients", "loss", "bytes_per_client_s")})
    return rows


def bench_capacity(ns: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        server = ServerProc()
        try:
            t0 = time.time() + 8.0 + n * 0.06
            procs = spawn_clients(server.url, n, 25, seconds, t0)
            ready = wait_ready(procs)
            # Inputs flow only in [t0, t0 + seconds]: counters read before and well after (the
            # worker's figures come with its heartbeat, every 0.25 s) count exactly those.
            _sleep_until(t0 - 0.7)
            before = worker0(server.stats())
            _sleep_until(t0 + 0.5)
            s0 = server.stats()  # CPU: inside the window
            _sleep_until(t0 + seconds - 0.5)
            s1 = server.stats()
            _sleep_until(t0 + seconds + 1.2)
            after = worker0(server.stats())
            res = collect(procs)
            w0, w1 = worker0(s0), worker0(s1)
            cpu_s = seconds - 1.0
            got = sum(r.get("snapshots_dc", 0) for r in res)
            sent = sum(r.get("inputs_sent", 0) for r in res)
            arrived = after["inputs"] - before["inputs"]
            expected = sum(r.get("snapshots_expected", 0) for r in res)
            received = sum(r.get("snapshots_received", 0) for r in res)
            rows.append({
                "clients": n, "up": ready, "seconds": seconds,
                "snapshots_per_client_s": round(got / max(1, ready) / seconds, 2),
                "down_loss": round(1 - received / max(1, expected), 4),
                "worker_dropped_snapshots": after["fast_drop"] - before["fast_drop"],
                "up_loss": round(1 - arrived / max(1, sent), 4),
                "worker_cpu_core": round((w1["cpu_s"] - w0["cpu_s"]) / cpu_s, 3),
                "worker_cpu_ms_per_client_s": round((w1["cpu_s"] - w0["cpu_s"]) / cpu_s / max(1, ready) * 1e3, 3),
                "tick_process_cpu_core": round((s1["cpu_s"] - s0["cpu_s"]) / cpu_s, 3),
                "tick_overruns": s1["overruns"] - s0["overruns"],
            })  # fmt: skip
        finally:
            server.stop()
    return rows


async def _latency_inner(url: str, ip: str, seconds: float) -> dict[str, Any]:
    """In the client's namespace: one WebSocket and one data-channel client, 20 Hz inputs each."""
    from netcode.client import ArbiterClient
    from netcode.client_session import Snapshot

    use_host_addresses([ip])
    loop = asyncio.get_running_loop()
    if True:
        ws = await ArbiterClient.connect(url, name="ws", token=token("ws"))
        dc = await ArbiterClient.connect(url, name="dc", token=token("dc"))
        up = (await dc.start_webrtc(timeout=30.0)).up
        lat: dict[str, list[float]] = {"websocket": [], "datachannel": []}
        pending: dict[str, dict[int, float]] = {"websocket": {}, "datachannel": {}}

        def hook(kind: str) -> Any:
            def on_snapshot(snap: Snapshot) -> None:
                now = loop.time()
                p = pending[kind]
                for seq in [s for s in p if s <= snap.ack_seq]:
                    lat[kind].append(now - p.pop(seq))

            return on_snapshot

        ws.on_snapshot = hook("websocket")
        dc.on_snapshot = hook("datachannel")
        await asyncio.sleep(1.0)
        start = loop.time()
        k = 0
        while loop.time() - start < seconds:
            for kind, c in (("websocket", ws), ("datachannel", dc)):
                pending[kind][c.send_input(0.3, 0.1)] = loop.time()
            k += 1
            await asyncio.sleep(max(0.0, start + k * 0.05 - loop.time()))
        await asyncio.sleep(1.0)
        out: dict[str, Any] = {"dc_up": up, "inputs_each": k}
        for kind, xs in lat.items():
            a = np.array(xs) * 1e3
            out[kind] = {"acked": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1),
                         "p99_ms": round(float(np.percentile(a, 99)), 1),
                         "max_ms": round(float(a.max()), 1)}  # fmt: skip
        for c in (ws, dc):
            await c.close()
        return out


def bench_latency(seconds: float, delay: float = 0.025) -> list[dict[str, Any]]:
    if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/dev/net/tun"):
        return [{"skipped": "needs root, iproute2 and /dev/net/tun (two namespaces and an emulated wire)"}]
    rows = []
    for loss in (0.0, 0.05):
        link = TunLink(delay, loss)
        server = None
        try:
            # A send every tick (one send group): both clients' acks wait for the same sends.
            server = ServerProc("--send-rate", "60", host=link.ips[0], prefix=link.exec_prefix(0))
            cmd = [*link.exec_prefix(1), sys.executable, "-m", "bench.webrtc", "--latency-inner", "--url", server.url,
                   "--host-ip", link.ips[1], "--seconds", str(seconds)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
            lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
            rows.append({"loss": loss, "one_way_delay_ms": delay * 1e3, "wire_dropped": link.dropped,
                         **(lines[-1] if lines else {"error": res.stderr[-300:]})})  # fmt: skip
        finally:
            if server is not None:
                server.stop()
            link.close()
    return rows


def bench_voice(speakers: int, listeners: int, seconds: float) -> dict[str, Any]:
    server = ServerProc("--voice-radius", "0")
    try:
        t0 = time.time() + 10.0
        sp = spawn_clients(server.url, speakers, speakers, seconds, t0, role="speaker")
        ls = spawn_clients(server.url, listeners, 10, seconds, t0, role="listener")
        ready = wait_ready(sp) + wait_ready(ls)
        while time.time() < t0:
            time.sleep(0.01)
        s0 = worker0(server.stats())
        time.sleep(seconds)
        s1 = worker0(server.stats())
        res = collect(sp + ls)
        streams = listeners * min(speakers, 4)
        cpu = (s1["cpu_s"] - s0["cpu_s"]) / seconds
        fwd = (s1["voice_out"] - s0["voice_out"]) / seconds
        return {
            "speakers": speakers, "listeners": listeners, "up": ready, "streams_routed": streams,
            "packets_in_per_s": round((s1["voice_in"] - s0["voice_in"]) / seconds, 1),
            "packets_forwarded_per_s": round(fwd, 1),
            "packets_received_by_listeners_per_s": round(sum(r.get("audio_packets", 0) for r in res) / seconds),
            "worker_cpu_core": round(cpu, 3),
            "worker_cpu_pct_per_stream": round(100 * cpu / max(1.0, fwd / 50), 3),
            "streams_per_worker_core_extrapolated": round((fwd / 50) / cpu) if cpu > 0 else None,
        }  # fmt: skip
    finally:
        server.stop()


async def _voice_inprocess(mode: str, subscribers: int, seconds: float) -> dict[str, Any]:
    """1 speaker → N subscribers through one forwarding peer, all in this process: `relay` is aiortc's
    MediaRelay (decode once, re-encode per subscriber), `pass` the worker's pass-through."""
    import av
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
    from aiortc.contrib.media import MediaRelay

    from engine.webrtc.worker import Counters, SlotTrack, enable_passthrough
    from tests.rtcutil import Tone

    use_host_addresses(["127.0.0.1"])
    if mode == "pass":
        enable_passthrough()
    pcs: list[RTCPeerConnection] = []

    async def link(sender: RTCPeerConnection, receiver: RTCPeerConnection) -> None:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)

    a, s_in = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pcs += [a, s_in]
    a.addTrack(Tone())
    got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    s_in.on("track", lambda t: None if got.done() else got.set_result(t))
    await link(a, s_in)
    track = await got
    relay = MediaRelay()
    tasks: list[asyncio.Future[None]] = []
    slots = []
    counts = [0] * subscribers
    for i in range(subscribers):
        s_out = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs += [s_out, b]
        if mode == "pass":
            slot = SlotTrack(Counters())
            slots.append(slot)
            s_out.addTrack(slot)
        else:
            s_out.addTrack(relay.subscribe(track))
        fut: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        b.on("track", lambda t, fut=fut: None if fut.done() else fut.set_result(t))
        await link(s_out, b)

        async def count(fut: asyncio.Future[MediaStreamTrack] = fut, i: int = i) -> None:
            t = await fut
            with contextlib.suppress(Exception):
                while True:
                    await t.recv()
                    counts[i] += 1

        tasks.append(asyncio.ensure_future(count()))

    async def pump() -> None:
        with contextlib.suppress(Exception):
            while True:
                p = await track.recv()
                if isinstance(p, av.Packet):
                    for s in slots:
                        s.push(1, p)

    if mode == "pass":
        tasks.append(asyncio.ensure_future(pump()))
    await asyncio.sleep(1.5)
    c0, n0 = time.process_time(), sum(counts)
    await asyncio.sleep(seconds)
    cpu = (time.process_time() - c0) / seconds
    frames = (sum(counts) - n0) / seconds / subscribers
    for pc in pcs:
        await pc.close()
    return {"mode": mode, "subscribers": subscribers, "frames_per_subscriber_s": round(frames, 1),
            "process_cpu_core": round(cpu, 3)}  # fmt: skip


def bench_voice_inprocess(seconds: float) -> list[dict[str, Any]]:
    rows = []
    for mode in ("relay", "pass"):
        for subs in (1, 4):
            cmd = [sys.executable, "-m", "bench.webrtc", "--voice-inner", mode, "--n", str(subs), "--seconds",
                   str(seconds)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
            lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
            rows.append(lines[-1] if lines else {"mode": mode, "error": res.stderr[-300:]})
    return rows


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small scale: proves the bench works")
    ap.add_argument("--clients", default="25,50,100")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sections", default="ipc,delta_loss,capacity,latency,voice,voice_inprocess")
    # internal: the child processes of the sections
    ap.add_argument("--client-proc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--latency-inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--voice-inner", default="", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--base", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--role", default="player", help=argparse.SUPPRESS)
    ap.add_argument("--host-ip", default="127.0.0.1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import uvloop

    if args.client_proc:
        print(json.dumps(uvloop.run(_client_proc(args))), flush=True)
        return
    if args.latency_inner:
        print(json.dumps(uvloop.run(_latency_inner(args.url, args.host_ip, args.seconds))), flush=True)
        return
    if args.voice_inner:
        print(json.dumps(uvloop.run(_voice_inprocess(args.voice_inner, args.n, args.seconds))), flush=True)
        return
    quick = args.quick
    secs = 3.0 if quick else args.seconds
    sections = set(args.sections.split(","))
    out: dict[str, Any] = {"quick": quick, "cpu_count": os.cpu_count()}
    if "ipc" in sections:
        out["ipc"] = bench_ipc(50_000 if quick else 200_000)
        print("ipc", json.dumps(out["ipc"]), flush=True)
    if "delta_loss" in sections:
        out["delta_loss"] = bench_delta_loss(quick)
        print("delta_loss", json.dumps(out["delta_loss"]), flush=True)
    if "capacity" in sections:
        ns = [10] if quick else [int(x) for x in args.clients.split(",")]
        out["capacity"] = bench_capacity(ns, secs)
        print("capacity", json.dumps(out["capacity"]), flush=True)
    if "latency" in sections:
        out["latency"] = bench_latency(5.0 if quick else max(secs, 20.0))
        print("latency", json.dumps(out["latency"]), flush=True)
    if "voice" in sections:
        out["voice"] = bench_voice(2, 4, secs) if quick else bench_voice(4, 20, secs)
        print("voice", json.dumps(out["voice"]), flush=True)
    if "voice_inprocess" in sections:
        out["voice_inprocess"] = bench_voice_inprocess(2.0 if quick else 4.0)
        print("voice_inprocess", json.dumps(out["voice_inprocess"]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
