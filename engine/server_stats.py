"""What one campaign's /stats and /stats/full say, and what a host's own /stats says.

Public /stats keeps only what a load balancer or a player needs: load and health; nothing that
helps tune a cheat (violation counters, bans) or size an attack (memory, pid, door events). Every
other figure is behind an admin token (/stats/full, docs/security.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from engine.security.auth import AuthError, TokenVerifier, bearer_claims
from netcode.protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from engine.host import Host
    from engine.server import GameServer
    from netcode.ws_server import HttpAnswer

PUBLIC_STATS: Final = (
    "protocol_version", "game", "campaign", "tick", "tick_rate", "send_rate", "ticks", "tick_hz", "tick_p50_ms",
    "tick_p99_ms", "send_p99_ms", "overruns", "ccu", "capacity", "connections", "connection_phases", "sends",
    "snapshots_sent",
    "snapshots_skipped", "bytes_out", "inputs", "uptime_s",
)  # fmt: skip
HOST_PUBLIC_STATS: Final = (
    "protocol_version", "host", "campaigns", "hibernated", "capacity", "ccu", "connections", "connection_phases",
    "uptime_s",
)  # fmt: skip


def full_stats_answer(
    authorization: str | None,
    verifier: TokenVerifier | None,
    figures: Callable[[], dict[str, Any]],
    refused: Callable[[AuthError], None] = lambda e: None,
) -> HttpAnswer:
    """`GET /stats/full`: every figure, for an admin-role bearer token (like the admin API; never
    open without keys)."""
    if verifier is None:
        return 401, "text/plain", b"needs join-token keys on the server and an admin token\n"
    try:
        bearer_claims(authorization, verifier, role="admin")
    except AuthError as e:
        refused(e)
        return e.http_status, "text/plain", (e.public_message + "\n").encode()
    return 200, "application/json", json.dumps(figures()).encode()


def _schedule(s: GameServer) -> dict[str, int]:
    slot = s.slot
    if slot is None:
        return {"overruns": 0, "late_ticks": 0, "dropped_ticks": 0, "throttled_ticks": 0}
    return {"overruns": slot.overruns, "late_ticks": slot.ticker.late_ticks, "dropped_ticks": slot.ticker.dropped_ticks,
            "throttled_ticks": slot.throttled}  # fmt: skip


def _connections(s: GameServer) -> tuple[int, dict[str, int]]:
    """Open connections: the whole door's when the campaign has the port to itself (serve), else its own."""
    host = s.host
    if host is not None and host.single:
        return len(host.door.conns), host.door.phases()
    playing = sum(1 for c in s.clients.values() if c.eid >= 0 or c.spectator)
    return len(s.clients), {"http": 0, "hello": len(s.clients) - playing, "playing": playing}


def full_stats(s: GameServer) -> dict[str, Any]:
    """Every figure of one campaign (`/stats/full`, admin token; /metrics)."""
    d = s.stats.as_dict()
    proc = s.proc
    with proc.oneshot():
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss
    conns, phases = _connections(s)
    d.update(
        protocol_version=PROTOCOL_VERSION, game=s.cfg.game, campaign=s.cfg.campaign, tick=s.campaign.tick_count,
        tick_rate=s.cfg.tick_rate, send_rate=s.cfg.send_rate, ccu=len(s.by_eid), capacity=s.campaign.game.max_players,
        connections=conns, connection_phases=phases,
        uptime_s=round(time.time() - s.started_wall, 3), cpu_s=round(cpu.user + cpu.system, 3),
        rss_mb=round(rss / 2**20, 1), pid=os.getpid(), **_schedule(s),
    )  # fmt: skip
    host = s.host
    if host is not None:
        door = host.door
        d.update(refused_connections=door.refused, door_events=dict(door.log.total.most_common(20)),
                 door_bugs=door.log.bugs)  # fmt: skip
        if s.slot is not None:
            d["busy_s"] = round(s.slot.busy_s, 3)
    d["inputs"] = d["inputs_accepted"] + d["inputs_refused"]
    d["fairplay"] = s.fairplay.referee.stats()
    if s.progress is not None:
        d["pg"] = {k: v for k, v in s.progress.pg.stats().items() if isinstance(v, int | float | str | bool)}
        d["pg"]["ledger_rows"] = s.progress.ledger_rows
    if s.shipper is not None:
        d["ship"] = s.shipper.stats()
    if s.rtc is not None:
        d["webrtc"] = s.rtc.stats()
    j = s.journal
    if j is not None:
        st = j.store
        d.update(
            durable_tick=j.durable_tick, journal_backlog=j.backlog, store_queue_depth=st.queue_depth,
            store_last_commit_ms=round(st.last_commit_ms, 3), store_bytes_written=st.bytes_written,
            store_write_errors=st.write_errors, snapshots_taken=j.snapshots_taken,
        )  # fmt: skip
    return d


def public_stats(s: GameServer) -> dict[str, Any]:
    """What anyone may read about one campaign on the game port."""
    d = s.stats.as_dict()
    conns, phases = _connections(s)
    d.update(
        inputs=d["inputs_accepted"] + d["inputs_refused"], protocol_version=PROTOCOL_VERSION, game=s.cfg.game,
        campaign=s.cfg.campaign, tick=s.campaign.tick_count, tick_rate=s.cfg.tick_rate,
        send_rate=s.cfg.send_rate, ccu=len(s.by_eid), capacity=s.campaign.game.max_players,
        connections=conns, connection_phases=phases, overruns=_schedule(s)["overruns"],
        uptime_s=round(time.time() - s.started_wall, 3),
    )  # fmt: skip
    return {k: d[k] for k in PUBLIC_STATS}


def host_stats(h: Host, *, full: bool = False) -> dict[str, Any]:
    """A host's own figures (`/stats` of `arbiter host`; `full`: every figure, `/stats/full`)."""
    loaded = h.loaded()
    d: dict[str, Any] = {
        "protocol_version": PROTOCOL_VERSION, "host": h.name, "campaigns": len(loaded),
        "hibernated": h.hibernated_count(), "capacity": h.capacity, "ccu": sum(len(s.by_eid) for s in loaded),
        "connections": len(h.door.conns), "connection_phases": h.door.phases(),
        "uptime_s": round(time.time() - h.started_wall, 3),
    }  # fmt: skip
    if not full:
        return {k: d[k] for k in HOST_PUBLIC_STATS}
    proc = h.proc
    with proc.oneshot():
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss
        threads = proc.num_threads()
    d.update(
        cpu_s=round(cpu.user + cpu.system, 3), rss_mb=round(rss / 2**20, 1), threads=threads, pid=os.getpid(),
        refused_connections=h.door.refused, door_events=dict(h.door.log.total.most_common(20)),
        door_bugs=h.door.log.bugs, lobby=len(h.front.lobby), wakes=h.wakes, hibernations=h.hibernations,
        wake_ms=h.wake_ms_summary(), campaign_states=h.states(),
        per_campaign={s.cfg.campaign: {"ccu": len(s.by_eid), "tick": s.campaign.tick_count, "ticks": s.stats.ticks,
                                       "inputs": s.stats.inputs_accepted + s.stats.inputs_refused,
                                       "snapshots_sent": s.stats.snapshots_sent,
                                       "snapshots_skipped": s.stats.snapshots_skipped, **_schedule(s)}
                      for s in loaded},
    )  # fmt: skip
    return d
