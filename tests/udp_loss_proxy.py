"""A UDP proxy that loses datagrams: put it between a WebRTC client and its TURN server.

Every datagram from a client to `target` and back passes through one proxy socket per client
address; each is dropped with probability `loss` (independently, per direction), from a seeded RNG.
This is real packet loss for everything above UDP: STUN/TURN, DTLS, SCTP and RTP all see it.
"""

from __future__ import annotations

import asyncio
import random


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpLossProxy, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy.relay_back(data, self.client)


class UdpLossProxy(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int], loss: float, seed: int = 1) -> None:
        self.target = target
        self.loss = loss
        self.rng = random.Random(seed)
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple[str, int], _Upstream] = {}
        self.passed = 0
        self.dropped = 0

    @classmethod
    async def start(cls, target: tuple[str, int], loss: float, seed: int = 1) -> UdpLossProxy:
        loop = asyncio.get_running_loop()
        proxy = cls(target, loss, seed)
        await loop.create_datagram_endpoint(lambda: proxy, local_addr=("127.0.0.1", 0))
        return proxy

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _lost(self) -> bool:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return True
        self.passed += 1
        return False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        up = self.upstreams.get(addr)
        if up is None:
            up = _Upstream(self, addr)
            self.upstreams[addr] = up
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_datagram_endpoint(lambda: up, local_addr=("127.0.0.1", 0)))
            task.add_done_callback(lambda _t: None if self._lost() else self._forward(up, data))
            return
        if up.transport is not None and not self._lost():
            up.transport.sendto(data, self.target)

    def _forward(self, up: _Upstream, data: bytes) -> None:
        if up.transport is not None:
            up.transport.sendto(data, self.target)

    def relay_back(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None and not self._lost():
            self.transport.sendto(data, client)

    def close(self) -> None:
        for up in self.upstreams.values():
            if up.transport is not None:
                up.transport.close()
        if self.transport is not None:
            self.transport.close()
