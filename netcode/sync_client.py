"""A blocking Python client: the SDK's Sans-I/O `ClientSession` over websockets' synchronous client.

For callers that are not asyncio: tools, scripts, and load generators running under gevent
(locust, bench/locustfile.py). After `gevent.monkey.patch_all()` websockets' sync client runs on
gevent's sockets and its reader thread becomes a greenlet, so hundreds of these share one process
without an event loop of ours; the protocol code path (hello, inputs, snapshots, acks) is the same
one `ArbiterClient` and the bots use.

    c = SyncArbiterClient.connect("ws://127.0.0.1:8765/", "ada")
    c.send_input(0.5, 0.0)
    for ev in c.poll(0.05): ...
"""

from __future__ import annotations

import time
from collections import deque

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from netcode.client_session import Bye, ClientEvent, ClientSession, Error, Events, Snapshot, Welcome


class SyncClientError(ConnectionError):
    pass


class SyncArbiterClient:
    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.session = ClientSession()
        self.welcome: Welcome | None = None
        self.latest: Snapshot | None = None
        self.bye: Bye | None = None
        self.events: deque[tuple[int, int, int]] = deque(maxlen=1024)
        self.snapshots = 0
        self.sent_at: dict[int, float] = {}  # input seq → when it was sent (for input→ack latency)

    @classmethod
    def connect(cls, url: str, name: str, token: str = "", timeout: float = 10.0) -> SyncArbiterClient:
        """Open, say hello and wait for the welcome; SyncClientError on a refusal."""
        ws = connect(url, compression=None, open_timeout=timeout, max_size=1 << 24, ping_interval=None,
                     close_timeout=2.0, proxy=None, user_agent_header=None)  # fmt: skip
        self = cls(ws, name)
        try:
            ws.send(self.session.hello(name, token))
            deadline = time.monotonic() + timeout
            while self.welcome is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SyncClientError(f"no welcome within {timeout} s")
                for ev in self.poll(left):
                    if isinstance(ev, Error):
                        raise SyncClientError(f"refused: {ev.code} {ev.msg}")
        except BaseException:
            ws.close()
            raise
        return self

    @property
    def player(self) -> int:
        assert self.welcome is not None
        return self.welcome.player

    def send_input(self, *values: float | int, **fields: float | int) -> int:
        """One input: the game's fields in the welcome spec's order and/or by wire key (absent: 0)."""
        if fields:
            frame = self.session.input({**dict(zip(self.session.input_keys, values, strict=False)), **fields})
        else:
            frame = self.session.input(values)  # mapped to the spec's fields by the session
        seq = self.session.seq
        self.sent_at[seq] = time.monotonic()
        if len(self.sent_at) > 4096:  # never acknowledged (refused, or the server is gone): forget
            for old in sorted(self.sent_at)[:2048]:
                del self.sent_at[old]
        self.ws.send(frame)
        return seq

    def poll(self, timeout: float) -> list[ClientEvent]:
        """Events of the next message, or [] when none arrives within `timeout` seconds.
        Raises SyncClientError when the connection is closed."""
        try:
            payload = self.ws.recv(timeout=max(0.0, timeout))
        except TimeoutError:
            return []
        except ConnectionClosed as exc:
            raise SyncClientError(f"connection closed: {exc}") from exc
        events = self.session.receive(payload, time.monotonic())
        for ev in events:
            if isinstance(ev, Snapshot):
                self.latest = ev
                self.snapshots += 1
            elif isinstance(ev, Welcome):
                self.welcome = ev
            elif isinstance(ev, Events):
                self.events.extend(ev.events)
            elif isinstance(ev, Bye):
                self.bye = ev
        return events

    def acked(self, ack_seq: int) -> float | None:
        """Seconds from sending input `ack_seq` to its acknowledgement (None if unknown); forgets it and
        every older input."""
        sent = self.sent_at.pop(ack_seq, None)
        for old in [s for s in self.sent_at if s < ack_seq]:
            del self.sent_at[old]
        return None if sent is None else time.monotonic() - sent

    def close(self) -> None:
        self.ws.close()
