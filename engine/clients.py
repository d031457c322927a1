"""What the server keeps per connected client (shared by the server and the snapshot sender)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.security.fairplay.signals import TimingStats
from netcode.session import ServerSession
from netcode.ws_server import WsServerConnection


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
    spectator: bool = False  # watches without a ship (engine/spectate.py)


def flush_session(client: Client) -> None:
    """Write the frames the client's session has queued (error, welcome, events, bye, ...)."""
    for frame in client.session.data_to_send():
        client.conn.send_parts(frame)
