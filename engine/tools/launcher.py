"""Start `arbiter serve` in a child process and wait until it says it is ready.

Used by `arbiter demo`, the benchmarks and the end-to-end tests, so all of them run the server
exactly the way an operator does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.cli import READY_PREFIX


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str
    host: str
    port: int
    log: list[str] = field(default_factory=list)
    admin_token: str | None = None  # an admin-role join token: stats() then reads /stats/full

    def http_json(self, path: str, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def stats(self) -> dict[str, Any]:
        """Public /stats, or every figure (/stats/full) when the launcher holds an admin token."""
        if self.admin_token:
            return self.http_json("/stats/full", token=self.admin_token)
        return self.http_json("/stats")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_server(
    args: Sequence[str] = (),
    *,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180.0,
    host: str = "127.0.0.1",
) -> ServerProcess:
    """Run `python -m engine.cli serve --port 0 ARGS`; returns once it listens."""
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--host", host, "--port", "0", *args]
    if cpu is not None and _has_taskset():
        cmd = ["taskset", "-c", str(cpu), *cmd]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, bufsize=1)
    assert proc.stdout is not None
    log: list[str] = []
    ready: dict[str, str] = {}
    got = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(log) < 5000:
                log.append(line.rstrip())
            if line.startswith(READY_PREFIX) and not got.is_set():
                ready["url"] = line.split()[1]
                got.set()
        got.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while not got.wait(0.1):
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("server did not become ready:\n" + "\n".join(log[-30:]))
    if "url" not in ready:
        proc.wait(5)
        raise RuntimeError("server exited before it was ready:\n" + "\n".join(log[-30:]))
    url = ready["url"]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    return ServerProcess(proc, url, host, port, log)


def _has_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None
