"""The hub's settings, with their defaults (the figures the issue and OWASP give)."""

from __future__ import annotations

from dataclasses import dataclass, field

# OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
OWASP_TIME_COST = 2
OWASP_MEMORY_KIB = 19456
OWASP_PARALLELISM = 1

# Hub access tokens carry this audience; a hub-made campaign id can never equal it, so an access
# token is no join token and a join token is no access token.
ACCESS_AUDIENCE = "arbiter:hub"


@dataclass(slots=True)
class HubConfig:
    pg_dsn: str
    redis_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    pg_schema: str = "public"
    redis_prefix: str = "arbiter:"
    hub_id: str = ""  # "" = generated at start

    # sessions
    access_ttl_s: int = 900
    refresh_ttl_s: int = 30 * 86400
    join_ttl_s: int = 60
    revocation_poll_s: float = 2.0

    # passwords (argon2id); lower only in tests, the log warns below OWASP's figures
    argon2_time_cost: int = OWASP_TIME_COST
    argon2_memory_kib: int = OWASP_MEMORY_KIB
    argon2_parallelism: int = OWASP_PARALLELISM
    hash_concurrency: int = 4  # argon2 runs at once (each takes argon2_memory_kib)

    # rate limits (Redis)
    login_failures_per_ip: int = 5
    login_window_s: float = 3600.0
    account_free_failures: int = 3
    account_backoff_base_s: float = 1.0
    account_backoff_cap_s: float = 900.0
    registrations_per_ip: int = 10
    registration_window_s: float = 3600.0
    trust_forwarded: bool = False  # take the client address from X-Forwarded-For (behind a proxy only)

    # chat
    chat_per_window: int = 10
    chat_window_s: float = 10.0
    chat_max_len: int = 500
    chat_history: int = 50
    # friend requests and reports: each notifies or writes for somebody else, so they have their own,
    # slower budget per account
    social_per_window: int = 30
    social_window_s: float = 3600.0
    streams_per_account: int = 8  # open /v1/stream sockets of one account, per hub process

    # HTTP and streams
    max_body: int = 64 * 1024
    # Browsers on these origins may call the API (the /play page of a game server is one). "*" is safe
    # here: the hub authenticates by bearer token, never by cookie, so no request carries ambient authority.
    cors_origins: tuple[str, ...] = ("*",)
    stream_queue: int = 512  # messages buffered per stream before it counts as too slow
    stream_auth_timeout_s: float = 5.0

    # presence
    presence_ttl_s: float = 30.0

    # campaigns and placement
    games: tuple[str, ...] = ()  # () = any game id a server accepts
    min_players: int = 2
    max_players: int = 50
    placement_timeout_s: float = 30.0
    waitlist_stale_s: float = 120.0
    sweep_every_s: float = 2.0
    archive_after_s: float = 7 * 86400.0

    # --spawn-local
    spawn_local: bool = False
    spawn_capacity: int = 8
    spawn_data_dir: str = "data"
    spawn_host: str = "127.0.0.1"
    spawn_public_host: str = "127.0.0.1"
    spawn_args: tuple[str, ...] = field(default_factory=tuple)  # extra `arbiter serve` arguments
    spawn_heartbeat_s: float = 1.0

    @property
    def below_owasp(self) -> bool:
        # OWASP's equivalent settings run from m = 47104 KiB, t = 1 to m = 7168 KiB, t = 5 (m·t ≥ 35840).
        m, t = self.argon2_memory_kib, self.argon2_time_cost
        return m < 7168 or m * t < 35840
