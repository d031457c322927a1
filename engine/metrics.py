"""Prometheus metrics (`/metrics`, prometheus-client), per campaign and per process.

Nothing here runs on the tick. A custom collector reads, at scrape time, the figures the server
keeps anyway (`TickStats` counters and rings, the ticker's overruns, the journal, the PostgreSQL
writers, fair play's counts) and turns them into metric families labelled by campaign. The tick
duration histogram is built from the duration ring: each scrape buckets the ticks that ran since
the previous one (up to the ring's 1024 ticks, 17 s at 60 Hz; scrape at least that often, or
`_count` falls behind `arbiter_ticks_total`).

Process-wide: CPU, memory and file descriptors (prometheus-client's process collector), Redis errors,
and the host's figures (hibernated campaigns, wake time) as plain prometheus-client objects that their
owners set. Served on the admin listener (engine/security/admin.py), not on the public game port
unless `--metrics-on-game-port`; see docs/metrics.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from engine.server import GameServer

# Tick durations in seconds: sub-millisecond to several periods of 60 Hz.
TICK_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.004, 0.008, 1 / 60, 0.025, 0.05, 0.1, 0.25)
WAKE_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class _TickHistogram:
    """Cumulative bucket counts of one campaign's tick durations, advanced at each scrape."""

    seen: int = 0  # ticks accounted for
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(TICK_BUCKETS) + 1, dtype=np.int64))
    total: float = 0.0
    sampled: int = 0

    def advance(self, ticks: int, newest: Any) -> None:
        new = ticks - self.seen
        if new <= 0:
            return
        self.seen = ticks
        values = newest(new)
        if values.size:
            self.counts += np.bincount(np.searchsorted(TICK_BUCKETS, values, side="left"),
                                       minlength=len(self.counts))  # fmt: skip
            self.total += float(values.sum())
            self.sampled += int(values.size)

    def buckets(self) -> list[tuple[str, float]]:
        cum = np.cumsum(self.counts)
        out = [(repr(float(b)), float(c)) for b, c in zip(TICK_BUCKETS, cum[:-1], strict=True)]
        out.append(("+Inf", float(cum[-1])))
        return out


class CampaignCollector(Collector):
    """Every campaign this process runs, read at scrape time (thread-safe registration)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, GameServer] = {}
        self._hist: dict[str, _TickHistogram] = {}

    def add(self, server: GameServer) -> None:
        with self._lock:
            self._servers[server.cfg.campaign] = server
            self._hist[server.cfg.campaign] = _TickHistogram()

    def remove(self, server: GameServer) -> None:
        with self._lock:
            if self._servers.get(server.cfg.campaign) is server:
                del self._servers[server.cfg.campaign]
                self._hist.pop(server.cfg.campaign, None)

    def describe(self) -> list[Metric]:
        return []  # families depend on what runs: do not let the registry call collect() to learn them

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            servers = list(self._servers.items())
        fam = _Families()
        fam.campaigns.add_metric([], len(servers))
        for cid, server in servers:
            hist = self._hist.get(cid)
            if hist is not None:
                _read_server(fam, cid, server, hist)
        yield from fam.all()


class _Families:
    """The metric families of one scrape."""

    def __init__(self) -> None:
        c, g, L = CounterMetricFamily, GaugeMetricFamily, ["campaign"]
        self.campaigns = g("arbiter_campaigns", "Campaigns loaded in this process")
        self.ticks = c("arbiter_ticks", "Ticks run", labels=L)
        self.tick_hist = HistogramMetricFamily("arbiter_tick_duration_seconds", "Duration of one tick", labels=L)
        self.tick_rate = g("arbiter_tick_rate_hz", "Achieved tick rate over the last ~17 s", labels=L)
        self.overruns = c("arbiter_tick_overruns", "Ticks that started a whole period late", labels=L)
        self.dropped = c("arbiter_ticks_dropped", "Ticks skipped after a stall (the world slowed down)", labels=L)
        self.ccu = g("arbiter_ccu", "Players in the campaign", labels=L)
        self.connections = g("arbiter_connections", "Open connections, joined or not", labels=L)
        self.bytes_in = c("arbiter_bytes_received", "Bytes received from clients", labels=L)
        self.bytes_out = c("arbiter_bytes_sent", "Bytes sent to clients", labels=L)
        self.snap_sent = c("arbiter_snapshots_sent", "Snapshots written to clients", labels=L)
        self.snap_skipped = c("arbiter_snapshots_skipped", "Snapshots skipped for a client's backlog", labels=L)
        self.inputs = c("arbiter_inputs", "Inputs by outcome", labels=["campaign", "result", "reason"])
        self.joins = c("arbiter_joins", "Players admitted", labels=L)
        self.auth_refusals = c("arbiter_auth_refusals", "Hellos whose join token was refused", labels=L)
        self.slow = c("arbiter_slow_disconnects", "Clients dropped for not reading", labels=L)
        self.violations = c("arbiter_violations", "Fair-play violations by kind", labels=["campaign", "kind"])
        self.decisions = c("arbiter_fairplay_decisions", "Fair-play decisions by action",
                           labels=["campaign", "action"])  # fmt: skip
        self.bans = c("arbiter_bans", "Bans decided (by policy or admin)", labels=L)
        self.bans_in_force = g("arbiter_bans_in_force", "Bans currently in force", labels=L)
        self.commit_lag = g("arbiter_journal_commit_lag_ticks",
                            "Ticks run but not yet committed to the local journal", labels=L)  # fmt: skip
        self.journal_backlog = g("arbiter_journal_backlog_ticks", "Journal records waiting for queue room", labels=L)
        self.store_errors = c("arbiter_store_write_errors", "Failed SQLite commits (retried)", labels=L)
        self.snapshots_taken = c("arbiter_world_snapshots", "World snapshots taken", labels=L)
        WL = ["campaign", "writer"]
        self.pg_depth = g("arbiter_pg_writebehind_queue_depth", "Rows (progress) or journal ticks (ship) "
                          "waiting for PostgreSQL", labels=WL)  # fmt: skip
        self.pg_spilled = c("arbiter_pg_writebehind_spilled", "Rows handed to the overflow sink", labels=WL)
        self.pg_spill_pending = g("arbiter_pg_writebehind_spill_pending", "Rows in the overflow sink", labels=WL)
        self.pg_failures = c("arbiter_pg_writebehind_failures", "Failed PostgreSQL writes (retried)", labels=WL)
        self.pg_connected = g("arbiter_pg_connected", "Whether the last PostgreSQL write succeeded", labels=WL)
        self.ship_bytes = c("arbiter_pg_ship_bytes", "Compressed bytes shipped to PostgreSQL", labels=L)
        self.ship_fenced = g("arbiter_pg_ship_fenced", "1 when another server took this campaign over", labels=L)

    def all(self) -> list[Metric]:
        return [v for v in vars(self).values() if isinstance(v, Metric)]


def _read_server(fam: _Families, cid: str, server: GameServer, hist: _TickHistogram) -> None:
    """One campaign's figures. Scrapes run on the event loop (the admin listener is aiohttp on the
    server's loop), so reading the server's dicts here never races the tick."""
    st = server.stats
    lab = [cid]
    fam.ticks.add_metric(lab, st.ticks)
    hist.advance(st.ticks, st.tick_dur.newest)
    fam.tick_hist.add_metric(lab, hist.buckets(), hist.total)
    fam.tick_rate.add_metric(lab, st.achieved_hz())
    d = server.stats_dict()
    clients = list(server.clients.values())
    bytes_in = st.closed_bytes_in + sum(c.conn.bytes_in for c in clients)
    bytes_out = st.closed_bytes_out + sum(c.conn.bytes_out for c in clients)
    rate_limited = st.closed_rate_limited + sum(c.session.dropped for c in clients)
    fam.overruns.add_metric(lab, d["overruns"])
    fam.dropped.add_metric(lab, d["dropped_ticks"])
    fam.ccu.add_metric(lab, d["ccu"])
    fam.connections.add_metric(lab, d["connections"])
    fam.bytes_in.add_metric(lab, bytes_in)
    fam.bytes_out.add_metric(lab, bytes_out)
    fam.snap_sent.add_metric(lab, st.snapshots_sent)
    fam.snap_skipped.add_metric(lab, st.snapshots_skipped)
    fam.inputs.add_metric([cid, "accepted", ""], st.inputs_accepted)
    fam.inputs.add_metric([cid, "refused", "rules"], st.inputs_refused)
    fam.inputs.add_metric([cid, "refused", "buffer_full"], st.inputs_dropped)
    fam.inputs.add_metric([cid, "refused", "rate_limited"], rate_limited)
    fam.inputs.add_metric([cid, "refused", "malformed"], st.protocol_errors)
    fam.joins.add_metric(lab, st.joins)
    fam.auth_refusals.add_metric(lab, st.auth_refusals)
    fam.slow.add_metric(lab, st.slow_disconnects)
    fp = d["fairplay"]
    for kind, n in sorted(fp["violations"].items()):
        fam.violations.add_metric([cid, str(kind)], n)
    for action, n in sorted(fp["decisions"].items()):
        fam.decisions.add_metric([cid, str(action)], n)
    fam.bans.add_metric(lab, fp["decisions"].get("ban", 0))
    fam.bans_in_force.add_metric(lab, fp["bans_in_force"])
    if "durable_tick" in d:
        fam.commit_lag.add_metric(lab, max(0, d["tick"] - d["durable_tick"]))
        fam.journal_backlog.add_metric(lab, d["journal_backlog"])
        fam.store_errors.add_metric(lab, d["store_write_errors"])
        fam.snapshots_taken.add_metric(lab, d["snapshots_taken"])
    pg = d.get("pg")
    if pg is not None:
        wl = [cid, "progress"]
        fam.pg_depth.add_metric(wl, pg["buffer_depth"])
        fam.pg_spilled.add_metric(wl, pg["overflowed"])
        fam.pg_spill_pending.add_metric(wl, pg["overflow_pending"])
        fam.pg_failures.add_metric(wl, pg["failures"])
        fam.pg_connected.add_metric(wl, 1.0 if pg["connected"] else 0.0)
    ship = d.get("ship")
    if ship is not None:
        wl = [cid, "ship"]
        # The shipper's buffer is the local journal file: nothing spills, the backlog waits on disk.
        fam.pg_depth.add_metric(wl, ship["lag_ticks"])
        fam.pg_spilled.add_metric(wl, 0)
        fam.pg_spill_pending.add_metric(wl, 0)
        fam.pg_failures.add_metric(wl, ship["failures"])
        fam.pg_connected.add_metric(wl, 1.0 if ship["connected"] else 0.0)
        fam.ship_bytes.add_metric(lab, ship["bytes_shipped"])
        fam.ship_fenced.add_metric(lab, 1.0 if ship["fenced"] else 0.0)


class ProcessMetrics:
    """This process's registry: the campaigns, the process collectors and the figures other parts set."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.campaigns = CampaignCollector()
        self.registry.register(self.campaigns)
        r = self.registry
        self.redis_errors = Counter("arbiter_redis_errors", "Redis operations that failed", ["op"], registry=r)
        # Set by `arbiter host` (many campaigns per process): hibernated campaigns and how long a wake took.
        self.hibernated = Gauge("arbiter_hibernated_campaigns", "Campaigns hibernated (unloaded)", registry=r)
        self.wake_seconds = Histogram("arbiter_campaign_wake_seconds", "Time to wake a hibernated campaign",
                                      buckets=WAKE_BUCKETS, registry=r)  # fmt: skip

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_process: ProcessMetrics | None = None
_process_lock = threading.Lock()


def process_metrics() -> ProcessMetrics:
    """The process's one ProcessMetrics (made on first use)."""
    global _process
    with _process_lock:
        if _process is None:
            _process = ProcessMetrics()
        return _process


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics` for an aiohttp listener (the admin API's)."""
    payload, ctype = process_metrics().exposition()
    resp = web.Response(body=payload)
    resp.headers["Content-Type"] = ctype  # with its version and charset parameters, as Prometheus expects
    return resp
