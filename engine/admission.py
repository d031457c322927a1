"""Admission: a hello becomes a seat (a ship and its welcome) in one campaign, or a clear refusal.

Join tokens, bans, one connection per account (a newer one takes the ship over, or is refused),
the campaign's capacity, and a fresh ship's durable progress loaded from PostgreSQL off the tick
before it joins (docs/auth.md, docs/security.md "Reconnecting").
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from engine.clients import Client, flush_session
from engine.security.auth import AuthError
from netcode.protocol import CloseCode, ErrorCode, dtype_to_wire
from netcode.session import HelloEvent, SessionState

if TYPE_CHECKING:
    from engine.server import GameServer

log = logging.getLogger("arbiter.server")


class Admission:
    def __init__(self, server: GameServer) -> None:
        self.s = server

    def hello(self, client: Client, ev: HelloEvent) -> None:
        if ev.watch:
            self.s.spectators.admit(client, ev)
            return
        if not self.s.accepting:
            client.session.reject(ErrorCode.SERVER_FULL, "server shutting down", CloseCode.GOING_AWAY)
            return
        name, account = ev.name, ev.name
        if self.s.verifier is not None:
            try:
                claims = self.s.verifier.verify(ev.token)
            except AuthError as e:
                if self.s.host is not None:
                    self.s.host.door.log.event(self.s.now(), logging.INFO, f"hello refused: {e.code.name}",
                                             f"{client.conn.peer} {e.detail}")  # fmt: skip
                self.s.stats.auth_refusals += 1
                client.session.reject(int(e.code), e.public_message, CloseCode.UNAUTHORIZED)
                self.s.fairplay.token_refused(client, e.code)
                return
            account, name = claims.account, claims.name or ev.name
            self.s.replay_dirty = True
        if self.s.fairplay.refuse_banned(client, account):
            return
        # One account, one connection, one ship: hellos of an account are serialized here, on the
        # loop, and a progress load in flight belongs to the account, not to a connection.
        holder = self.s.by_account.get(account)
        if holder is not None:
            if self.s.cfg.account_conflict == "refuse":
                client.session.reject(ErrorCode.ACCOUNT_IN_USE, "this account is already connected",
                                      CloseCode.ACCOUNT_IN_USE)  # fmt: skip
                return
            self._take_over(holder, client, name)
            return
        if self.s.campaign.full and account not in self.s.campaign.accounts:
            client.session.reject(ErrorCode.SERVER_FULL, "campaign is full", CloseCode.SERVER_FULL)
            return
        client.account, client.name = account, name
        self.s.by_account[account] = client
        if self.s.progress is not None and account not in self.s.campaign.accounts:
            # A new ship for this account: fetch its durable progress first, off the tick.
            task = asyncio.get_running_loop().create_task(self._admit_with_progress(account))
            self.s.tasks.add(task)
            task.add_done_callback(self.s.tasks.discard)
            return
        self._admit(client, None)

    def _take_over(self, old: Client, new: Client, name: str) -> None:
        """A newer connection of `old.account` replaces `old`: the ship, if there is one, carries
        over as it is (no leave, no join, no second restore); else the load in flight admits `new`."""
        account = old.account
        new.account, new.name = account, name
        self.s.by_account[account] = new
        eid = old.eid
        old.eid = -1  # its on_close leaves the ship alone
        old.session.send_bye("replaced by a newer connection of this account", CloseCode.REPLACED)
        flush_session(old)
        old.conn.close(int(CloseCode.REPLACED), "replaced by a newer connection")
        if eid < 0:
            return
        self.s.sender.remove(old)
        self.s.campaign.players[eid] = name
        self._seat(new, eid)
        log.info("%s: a new connection took ship %d over", account, eid)

    async def _admit_with_progress(self, account: str) -> None:
        assert self.s.progress is not None
        restore = None
        failed = False
        try:
            restore = await self.s.progress.pg.load_progress(account, self.s.cfg.campaign, timeout=2.0)
        except Exception as exc:
            failed = True
            if self.s.host is not None:
                self.s.host.door.log.event(self.s.now(), logging.WARNING, "progress not loaded", f"{account}: {exc}")
        client = self.s.by_account.get(account)  # the newest connection of the account, if any
        if client is None or client.eid >= 0:
            return
        if client.conn.is_open and client.session.state is SessionState.AWAIT_HELLO:
            if self.s.campaign.full:
                client.session.reject(ErrorCode.SERVER_FULL, "campaign is full", CloseCode.SERVER_FULL)
            elif not self.s.accepting:
                client.session.reject(ErrorCode.SERVER_FULL, "server shutting down", CloseCode.GOING_AWAY)
            else:
                self._admit(client, restore)
                if failed and self.s.progress is not None:
                    # A fresh ship: saving it would overwrite the progress PostgreSQL holds.
                    self.s.progress.unsaved.add(client.eid)
            flush_session(client)
            if client.session.close_code is not None:
                client.conn.close(int(client.session.close_code), client.session.close_reason or "")
        if client.eid < 0 and self.s.by_account.get(account) is client:
            del self.s.by_account[account]

    def _admit(self, client: Client, restore: dict[str, Any] | None) -> None:
        campaign = self.s.campaign
        account, name = client.account, client.name
        eid, resumed = campaign.join(name, account, restorable(restore, campaign.game.durable))
        if self.s.progress is not None:
            self.s.progress.joined(eid, account, name)
        if resumed:
            log.info("%s resumed entity %d", account, eid)
        self.s.stats.joins += 1
        self._seat(client, eid)

    def _seat(self, client: Client, eid: int) -> None:
        """`client` now plays ship `eid`: the welcome, then snapshots. Like a client coming back
        after a relocation, it keeps counting input seqs from where the ship's were (protocol.md)."""
        client.eid = eid
        self.s.sender.add(client)
        self.s.by_eid[eid] = client
        self.s.last_player_at = self.s.now()
        self.welcome(client, eid, self.s.sender.rep_wire, self.s.campaign.last_seq(eid))

    def welcome(self, client: Client, player: int, rep: dict[str, object] | None, ack_seq: int = 0) -> None:
        """Send the welcome: `player` is the client's entity (0 for a spectator); `ack_seq` the
        newest input of the ship already applied, where a new connection's inputs continue. The
        connection leaves the unauthenticated phase (docs/security.md)."""
        if self.s.host is None or self.s.host.door.admitted(client.conn):
            self.s.fairplay.connection_admitted(client.ip)
        game = self.s.campaign.game
        client.session.accept(
            player=player,
            tick=self.s.campaign.tick_count,
            tick_rate=self.s.cfg.tick_rate,
            send_rate=self.s.cfg.send_rate,
            game=game.name,
            world=self.s.world_constants,
            dtype=dtype_to_wire(game.record_dtype),
            rep=rep,
            spec=self.s.wire_spec,
            ack_seq=ack_seq,
        )



def restorable(progress: dict[str, Any] | None, durable: tuple[str, ...] = ()) -> dict[str, object] | None:
    """The part of a stored progress row a returning ship takes over: the game's resources and
    durable fields (`Game.durable`), and where it was and how it moved (docs/security.md,
    "Reconnecting")."""
    if not progress:
        return None
    out: dict[str, object] = {k: progress[k] for k in ("resources", *durable) if k in progress}
    pos = [progress.get(k) for k in ("last_x", "last_y", "last_vx", "last_vy")]
    if pos[0] is not None and pos[1] is not None:
        out["pos"] = [float(v or 0.0) for v in pos]
    return out


