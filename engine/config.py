"""The settings of a game server process and of its campaigns (`arbiter serve`, `arbiter host`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.relocation import ShipConfig
from engine.security.fairplay.referee import FairPlayConfig
from engine.webrtc.relay import WebRtcConfig
from sim.games import DEFAULT_GAME


@dataclass(slots=True)
class ServerConfig:
    game: str = DEFAULT_GAME
    campaign: str = "default"
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: str = "data"  # "" keeps the campaign in memory only (no journal, no recovery)
    durability: str = "normal"  # SQLite synchronous=NORMAL (survives kill -9) or "full" (power loss)
    snapshot_every_s: float = 10.0
    hash_every: int = 60  # record the world's state hash in the journal every N ticks
    store_commit_delay: float = 0.0  # test hook: a deliberately slow disk
    orphan_grace: float = 60.0
    pg_dsn: str = ""  # PostgreSQL for accounts' progress and the ledger (write-behind); "" = off
    progress_every_s: float = 5.0  # after a recovery, ships whose player has not come back leave then
    tick_rate: int = 60
    send_rate: int = 20
    max_catchup: int = 5
    max_frame: int = 4096  # largest inbound message; inputs are ~40 bytes
    write_limit: int = 64 * 1024  # a client's backlog above this skips its snapshot
    slow_strikes: int = 40  # consecutive skipped snapshots before a client is dropped (2 s at 20 Hz)
    max_offences: int = 5
    input_rate: float = 120.0  # inbound messages per second per connection (token bucket)
    input_burst: float = 60.0
    handshake_timeout: float = 5.0  # upgrade → hello (the session's deadline)
    upgrade_timeout: float = 5.0  # TCP accept → a complete HTTP upgrade request
    max_request_bytes: int = 8192  # HTTP request head before the upgrade
    max_headers: int = 32
    max_connections: int = 4096  # open connections, every phase
    max_unauth: int = 1024  # connections not yet playing (HTTP, upgrade, hello), every address
    max_backlog: int = 256 * 1024  # a connection's write buffer beyond this: dropped (docs/security.md)
    account_conflict: str = "takeover"  # a second hello of a playing account: "takeover" or "refuse"
    idle_timeout: float = 20.0  # no bytes from a client for this long: it is gone
    ping_interval: float = 5.0
    replication: str = "delta"  # "delta": AOI + quantized deltas (docs/replication.md); "full": raw world
    aoi_radius: float | None = None  # None: the game's default view radius; 0: the whole world
    snapshot_budget: int = 1400  # max bytes of one client's delta snapshot body (0: unlimited)
    game_config: Mapping[str, object] = field(default_factory=dict)
    fairplay: FairPlayConfig = field(default_factory=FairPlayConfig)  # docs/fairplay.md
    admin_port: int | None = None  # the admin API's port (None: off; 0: any free port)
    admin_host: str = "127.0.0.1"
    metrics_on_game_port: bool = False  # /metrics on the public game port too (default: admin listener only)
    ship: ShipConfig = field(default_factory=ShipConfig)  # relocation through PostgreSQL (docs/relocation.md)
    drain_timeout: float = 10.0  # at shutdown, how long PostgreSQL may take to receive the final journal
    hub_url: str = ""  # the hub the /play page logs in through ("" = guests and pasted tokens)
    watch_public: bool = False  # /watch without an admin token (docs/web.md)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)  # docs/webrtc.md; workers=0: off
