"""An emulated network path between two network namespaces, for benchmarks that need real loss
and delay (netem is not available on the project's machines).

Each namespace gets a TUN device; a thread in this process moves every IP packet from one device
to the other after `delay` seconds, dropping each with probability `loss`. The kernels at both ends
see a real path: TCP measures the round trip and retransmits, UDP datagrams are simply lost. Needs
root, iproute2 and /dev/net/tun.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time


class TunLink:
    """Two network namespaces joined by a wire this process emulates: every IP packet between them
    is delayed by `delay` seconds and lost with probability `loss`, each way. The kernels at both
    ends see a real path (TCP measures the RTT, retransmits, ...); netem is not available here."""

    def __init__(self, delay: float, loss: float, seed: int = 1) -> None:
        import fcntl
        import random
        import struct
        import threading

        tag = os.getpid() % 100000
        self.ns = (f"arb-srv-{tag}", f"arb-cli-{tag}")
        self.ips = ("10.99.0.1", "10.99.0.2")
        self.fds: list[int] = []
        self.delay, self.loss, self.rng = delay, loss, random.Random(seed)
        self.passed = self.dropped = 0
        for i, ns in enumerate(self.ns):
            dev = f"arbtun{tag}{i}"[:15]
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", dev.encode(), 0x0001 | 0x1000))  # TUNSETIFF TUN|NO_PI
            self.fds.append(fd)
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "link", "set", dev, "netns", ns], check=True)
            for c in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{self.ips[i]}/24", "dev", dev],
                      ["ip", "link", "set", dev, "up"]):  # fmt: skip
                subprocess.run(["ip", "netns", "exec", ns, *c], check=True)
        self._stop = False
        self._thread = threading.Thread(target=self._wire, daemon=True)
        self._thread.start()

    def _wire(self) -> None:
        import heapq
        import select

        a, b = self.fds
        due: list[tuple[float, int, int, bytes]] = []
        n = 0
        while not self._stop:
            timeout = max(0.0, due[0][0] - time.monotonic()) if due else 0.05
            ready, _, _ = select.select([a, b], [], [], min(timeout, 0.05))
            now = time.monotonic()
            for fd in ready:
                pkt = os.read(fd, 65536)
                if self.rng.random() < self.loss:
                    self.dropped += 1
                    continue
                self.passed += 1
                n += 1
                heapq.heappush(due, (now + self.delay, n, b if fd == a else a, pkt))
            while due and due[0][0] <= time.monotonic():
                _, _, out, pkt = heapq.heappop(due)
                with contextlib.suppress(OSError):
                    os.write(out, pkt)

    def exec_prefix(self, side: int) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns[side])

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for fd in self.fds:
            os.close(fd)
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], check=False)
