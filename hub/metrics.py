"""The hub's Prometheus metrics (prometheus-client), in a registry of its own per hub instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HubMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("arbiter_hub_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("arbiter_hub_request_seconds", "HTTP request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.logins = Counter("arbiter_hub_logins", "login attempts by outcome", ["outcome"], registry=r)
        self.refreshes = Counter("arbiter_hub_refreshes", "refresh attempts by outcome", ["outcome"], registry=r)
        self.streams = Gauge("arbiter_hub_streams", "open /v1/stream connections", registry=r)
        self.stream_slow = Counter("arbiter_hub_stream_slow_disconnects", "streams cut for not reading", registry=r)
        self.deliveries = Counter("arbiter_hub_deliveries", "messages queued to streams", ["type"], registry=r)
        self.chat_posts = Counter("arbiter_hub_chat_posts", "chat messages stored", registry=r)
        self.bus_events = Counter("arbiter_hub_bus_events", "events received from the bus", ["type"], registry=r)
        self.redis_errors = Counter("arbiter_hub_redis_errors", "operations refused because Redis was down",
                                    registry=r)  # fmt: skip
        self.placements = Histogram("arbiter_hub_placement_seconds", "time to start a campaign on a server",
                                    ["outcome"], buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.joins = Counter("arbiter_hub_joins", "join requests by outcome", ["outcome"], registry=r)
        self.leaderboard_rebuilds = Counter("arbiter_hub_leaderboard_rebuilds", "leaderboards rebuilt from PostgreSQL",
                                            registry=r)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
