"""Run Debian's coturn `turnserver` in the foreground with `use-auth-secret`, for development, the
tests and bench/webrtc.py (production runs coturn as its own service with the same two settings:
`use-auth-secret` and a `static-auth-secret` shared with the game servers).

    with Coturn.start(secret="s3cret") as turn:
        turn.url    # "turn:127.0.0.1:<port>?transport=udp"
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

# A STUN Binding request (RFC 5389): coturn answers it once it listens.
_BINDING = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)


class CoturnError(RuntimeError):
    pass


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Coturn:
    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, secret: str, workdir: str) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.secret = secret
        self.workdir = workdir

    @property
    def url(self) -> str:
        return f"turn:{self.host}:{self.port}?transport=udp"

    @classmethod
    def start(
        cls,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        realm: str = "arbiter",
        timeout: float = 10.0,
        loopback_peers: bool = True,
    ) -> Coturn:
        """`loopback_peers`: relay to 127.0.0.0/8 (coturn refuses by default; tests run there)."""
        exe = shutil.which("turnserver")
        if exe is None:
            raise CoturnError("coturn is not installed: apt-get install -y coturn")
        workdir = tempfile.mkdtemp(prefix="arbiter-coturn-")
        for _attempt in range(5):
            p = port or free_udp_port(host)
            cmd = [
                exe, "-n", f"--listening-ip={host}", f"--relay-ip={host}", f"--listening-port={p}",
                "--use-auth-secret", f"--static-auth-secret={secret}", f"--realm={realm}",
                "--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay", "--no-multicast-peers",
                *(["--allow-loopback-peers"] if loopback_peers else []),
                f"--pidfile={workdir}/turnserver.pid", f"--userdb={workdir}/turndb",
                f"--log-file={workdir}/turn.log", "--simple-log",
            ]  # fmt: skip
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            turn = cls(proc, host, p, secret, workdir)
            if turn._wait_ready(timeout):
                return turn
            turn.stop()
            if port:
                break
        raise CoturnError(f"turnserver did not answer on {host}:{port or p} (log: {workdir}/turn.log)")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                s.sendto(_BINDING, (self.host, self.port))
                try:
                    data = s.recv(2048)
                except (TimeoutError, ConnectionRefusedError):
                    continue
                if data[:2] == b"\x01\x01":
                    return True
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Coturn:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
