"""What the server keeps per connected client (shared by the server and the snapshot sender)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from engine.latency import Latency
from engine.security.fairplay.signals import TimingStats
from netcode.session import ServerSession
from netcode.ws_server import WsServerConnection


class FrameSink(Protocol):
    """Where a client's outbound frames go: its WebSocket, or a route through a WebRTC relay worker
    (engine/webrtc/relay.py). Writes never await; a sink that cannot take a frame drops it."""

    @property
    def is_open(self) -> bool: ...

    @property
    def write_buffer_size(self) -> int: ...

    def send_framed(self, data: bytes) -> None:
        """Bytes that are one whole WebSocket frame (the replicator's framed output)."""
        ...

    def send_parts(self, *parts: bytes, limit: int = ...) -> bool:
        """One message made of `parts`; False when nothing was written."""
        ...


@dataclass(slots=True)
class Client:
    conn: WsServerConnection
    session: ServerSession
    opened_at: float
    eid: int = -1
    name: str = ""
    account: str = ""
    ip: str = ""
    group: int = 0  # which of the staggered send groups this client is served in
    rep_slot: int = -1  # this client's row in the replicator (delta snapshots)
    strikes: int = 0  # consecutive snapshots skipped because of the client's backlog
    last_rx_count: int = 0
    last_rx_time: float = 0.0
    pending_events: list[tuple[int, int, int]] = field(default_factory=list)
    timing: TimingStats | None = None  # fair play's input-timing signal (None: off)
    latency: Latency = field(default_factory=Latency)  # RTT and rewind bound (lag-compensated games)
    spectator: bool = False  # watches without a ship (engine/spectate.py)
    # Snapshots go to `unreliable`, the session's frames (events, errors, pongs) to `reliable`: both
    # are the WebSocket until the client's WebRTC data channels open (then the unordered and the
    # ordered channel), and again after they close.
    unreliable: FrameSink = field(default=None)  # type: ignore[assignment]
    reliable: FrameSink = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.unreliable is None:
            self.unreliable = self.conn
        if self.reliable is None:
            self.reliable = self.conn


def flush_session(client: Client) -> None:
    """Write the frames the client's session has queued (error, welcome, events, bye, ...).

    A closing session's frames (the bye) take the WebSocket, whose close follows them."""
    out = client.reliable if client.session.close_code is None else client.conn
    for frame in client.session.data_to_send():
        out.send_parts(frame)
