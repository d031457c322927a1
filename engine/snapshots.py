"""Sending snapshots: staggered send groups, raw or delta frames, backlog bounds.

Clients are split into up to `tick_rate // send_rate` groups (one per GROUP_SIZE players the
campaign may hold) and one group is served per sub-send, so each client still gets `send_rate`
snapshots per second while the socket writes of one send are spread over several ticks. Writes
never await: a client whose backlog is over the bound is skipped for that snapshot (it is
superseded anyway) and reset after `slow_strikes` consecutive skips.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import numpy as np

from engine.campaign import Campaign
from engine.clients import Client, flush_session
from engine.journal import Journal
from engine.spectate import MAX_SPECTATORS
from engine.stats import TickStats
from netcode.protocol import PreparedSnapshot
from netcode.replication.replicator import Replicator
from netcode.replication.schema import schema_of, schema_to_wire
from netcode.replication.warm import warmup as replication_warmup
from netcode.ws_frames import OP_BINARY, server_frame
from sim.entities import SLOT_MASK

if TYPE_CHECKING:
    from engine.config import ServerConfig

log = logging.getLogger("arbiter.snapshots")

GROUP_SIZE: Final = 64  # players per send group (at most tick_rate // send_rate groups)


class SnapshotSender:
    def __init__(self, cfg: ServerConfig, campaign: Campaign, journal: Journal | None, stats: TickStats) -> None:
        self.cfg = cfg
        self.campaign = campaign
        self.journal = journal
        self.stats = stats
        # Groups spread the socket writes of a big campaign's send over several ticks; a small one
        # (a host's) is served in one group, so the world is quantized once per send, not per tick.
        most = max(1, cfg.tick_rate // max(1, cfg.send_rate))
        self.groups = min(most, -(-campaign.game.max_players // GROUP_SIZE))
        self._next_group = 0
        self._rotate = 0
        self.replicator: Replicator | None = None
        self.rep_wire: dict[str, object] | None = None  # the welcome's "rep" (None: raw snapshots)
        self.watch_rep_wire: dict[str, object] | None = None  # the same for spectators: view radius 0
        self._free_slots: list[int] = []
        self._free_watch: list[int] = []
        if cfg.replication == "delta":
            game = campaign.game
            radius = cfg.aoi_radius if cfg.aoi_radius is not None else game.view_radius  # docs/replication.md
            schema = schema_of(game.replicated_fields())
            # Client slots: the players', then MAX_SPECTATORS more for spectators.
            n = game.max_players
            self.replicator = Replicator(schema, game.capacity, n + MAX_SPECTATORS, radius=radius or None)
            if cfg.snapshot_budget and cfg.snapshot_budget < self.replicator.min_budget():
                raise ValueError(f"snapshot_budget must be at least {self.replicator.min_budget()} bytes")
            self.rep_wire = {"mode": "delta", "schema": schema_to_wire(schema), "aoi": float(radius or 0.0)}
            self.watch_rep_wire = {**self.rep_wire, "aoi": 0.0}
            self._free_slots = list(range(n - 1, -1, -1))
            self._free_watch = list(range(n + MAX_SPECTATORS - 1, n - 1, -1))
        elif cfg.replication != "full":
            raise ValueError(f"replication must be 'delta' or 'full', not {cfg.replication!r}")

    # -- membership -------------------------------------------------------------------------------
    def add(self, client: Client) -> None:
        if self.replicator is not None:
            client.rep_slot = (self._free_watch if client.spectator else self._free_slots).pop()
        client.group = self._next_group
        self._next_group = (self._next_group + 1) % self.groups

    def remove(self, client: Client) -> None:
        if client.rep_slot >= 0 and self.replicator is not None:
            self.replicator.forget(client.rep_slot)
            (self._free_watch if client.spectator else self._free_slots).append(client.rep_slot)
            client.rep_slot = -1

    # -- the send ---------------------------------------------------------------------------------
    def send(self, clients: list[Client], group: int) -> None:
        members = [c for c in clients if (c.eid >= 0 or c.spectator) and c.group == group]
        if not members:
            return
        tick = self.campaign.tick_count
        n = len(members)
        start = self._rotate % n
        self._rotate += 1
        # Rotate who goes first so nobody is always served last (latency grows ~5 µs per position).
        order = members[start:] + members[:start]
        delta = self.replicator is not None
        for client in order:
            if client.pending_events:  # events go before the snapshot of the same send
                client.session.send_events(tick, client.pending_events)
                client.pending_events = []
                # On a plain WebSocket they ride in the snapshot's write (_encode): one write, not two.
                if not delta or client.reliable is not client.conn:
                    flush_session(client)
        if self.replicator is None:
            sent = self._send_full(tick, order)
        else:
            sent = self._send_delta(self.replicator, tick, order)
        stats = self.stats
        if len(sent) < n:
            for client in order:
                if id(client) in sent:
                    continue
                flush_session(client)  # its events, without the snapshot it was not sent
                stats.snapshots_skipped += 1
                client.strikes += 1
                if client.strikes >= self.cfg.slow_strikes:
                    stats.slow_disconnects += 1
                    conn = client.conn
                    log.warning("dropping %s (%s): backlog of %d bytes for %d snapshots",
                                client.name, conn.peer, conn.write_buffer_size, client.strikes)  # fmt: skip
                    # A stalled reader would never read a close frame: reset the connection.
                    conn.abort()
        stats.sends += 1

    def _acks(self, clients: list[Client]) -> list[int]:
        """The newest input seq of each client the server acknowledges (with a journal: the durable one)."""
        journal = self.journal
        if journal is not None:
            ack_for = journal.ack_for
            return [ack_for(c.eid) if c.eid >= 0 else 0 for c in clients]
        last_seq = self.campaign.world.arrays["last_seq"]
        return [int(last_seq[c.eid & SLOT_MASK]) if c.eid >= 0 else 0 for c in clients]

    def _send_full(self, tick: int, order: list[Client]) -> set[int]:
        """Raw whole-world frames (protocol.md `s`); returns the ids of the clients written to."""
        prep = PreparedSnapshot(tick, self.campaign.replicate())
        limit = max(self.cfg.write_limit, 2 * len(prep.tail))
        writable = [c for c in order if c.unreliable.write_buffer_size <= limit]
        sent: set[int] = set()
        stats = self.stats
        for client, ack in zip(writable, self._acks(writable), strict=True):
            frame = prep.frame(ack)
            if client.unreliable.send_parts(frame):
                client.strikes = 0
                stats.snapshots_sent += 1
                stats.bytes_out += len(frame)
                sent.add(id(client))
        return sent

    def _send_delta(self, rep: Replicator, tick: int, order: list[Client]) -> set[int]:
        """Delta frames, the whole group encoded in one call into one buffer of ready WebSocket
        frames; one socket write per client. Returns the ids of the clients written to."""
        if rep.tick < tick:  # one quantized copy of the world per tick, shared by every client
            self._begin(rep, tick, self.campaign.replicate())
        # Encoding a delta commits the server to what the client now holds: only encode for
        # clients whose frame is written right after (open, backlog under the bound).
        limit = self.cfg.write_limit
        writable = [c for c in order if c.unreliable.is_open and c.unreliable.write_buffer_size <= limit]
        players = [c for c in writable if not c.spectator]
        if players:
            slots = np.fromiter((c.rep_slot for c in players), np.int64, len(players))
            rep.set_viewers(slots, np.fromiter((c.eid & SLOT_MASK for c in players), np.int64, len(players)))
            self._encode(rep, players, slots, self.cfg.snapshot_budget or None)
        watchers = [c for c in writable if c.spectator]
        if watchers:
            # The whole world in view from its centre, no byte budget: same ring, same encoder.
            nw = len(watchers)
            slots = np.fromiter((c.rep_slot for c in watchers), np.int64, nw)
            x0, y0, x1, y1 = rep.schema.bounds()
            centre = np.full(nw, (x0 + x1) / 2), np.full(nw, (y0 + y1) / 2)
            rep.set_viewers(slots, np.full(nw, -1, np.int64), *centre, radius=float(np.hypot(x1 - x0, y1 - y0)))
            self._encode(rep, watchers, slots, None)
        return {id(c) for c in writable}

    def _encode(self, rep: Replicator, clients: list[Client], slots: np.ndarray, budget: int | None) -> None:
        """Encode a group in one call into one buffer of ready WebSocket frames; one write each."""
        buf, off = rep.encode_group(
            slots,
            [c.session.last_ack_tick or 0 for c in clients],  # the newest snapshot the client holds: its baseline
            self._acks(clients),  # with a journal, only inputs of committed ticks (acknowledged = durable)
            budget,
            ws=True,
        )
        a = 0
        for client, e in zip(clients, off[1:], strict=True):
            pre = client.session.data_to_send() if client.reliable is client.conn else None
            if pre:  # the send's events (and any other queued frame) first, in the same write
                client.conn.send_framed(b"".join([*(server_frame(OP_BINARY, f) for f in pre), buf[a:e]]))
            else:
                client.unreliable.send_framed(buf[a:e])
            client.strikes = 0
            a = e
        stats = self.stats
        stats.snapshots_sent += len(clients)
        stats.bytes_out += a

    def _begin(self, rep: Replicator, tick: int, records: np.ndarray) -> None:
        rep.begin_send(tick, records)
        always = self.campaign.always_relevant()  # e.g. startales' planets
        if always is not None:
            rep.always = always

    # -- warm-up ----------------------------------------------------------------------------------
    def warmup(self) -> None:
        """Run two sends of this campaign's real data through a scratch replicator.

        numba compiles one specialization per argument layout (e.g. a read-only broadcast radius),
        and the generic warm-up cannot know every layout the live path produces; without this the
        first real send compiled for seconds after the server said it was ready.
        """
        live = self.replicator
        if live is None:
            return
        replication_warmup()
        rep = Replicator(live.schema, self.campaign.game.capacity, 2, radius=live.radius)
        records = self.campaign.replicate().copy()
        if records.size == 0:
            return
        own = np.array([int(records["id"][0]) & SLOT_MASK, -1], dtype=np.int64)
        for tick, ack in ((1, 0), (2, 1)):
            self._begin(rep, tick, records)
            rep.set_viewers(np.arange(2, dtype=np.int64), own)
            rep.encode_group(np.arange(2, dtype=np.int64), [ack, 0], [0, 0], self.cfg.snapshot_budget or None, ws=True)
