"""Durable player data in PostgreSQL: the resource ledger and per-campaign progress.

Fed from the tick without waiting: every balance change the sim reports (EV_BALANCE, on the game's
`resources`) becomes one ledger row with a deterministic transaction id
(campaign:tick:entity:resource), so a retried batch or a replayed journal never writes a row twice;
progress rows (the game's `progress`: resources and durable fields, and the last position) are
upserted every few seconds and when a player leaves. Everything goes through `PgWriteBehind`'s
bounded buffer; nothing here awaits on the tick.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.campaign import Campaign, TickResult
from persistence.pg_rows import LedgerTxn, Progress
from persistence.pg_writer import PgWriteBehind
from sim.entities import SLOT_MASK
from sim.events import EV_BALANCE

log = logging.getLogger("arbiter.progress")


class ProgressSync:
    def __init__(self, pg: PgWriteBehind, campaign: Campaign) -> None:
        self.pg = pg
        self.campaign = campaign
        self._balance: dict[tuple[int, int], int] = {}
        self.ledger_rows = 0
        # Ships that joined fresh because their progress could not be loaded (PostgreSQL down):
        # nothing of theirs is written, so the progress PostgreSQL holds is never overwritten.
        self.unsaved: set[int] = set()

    # -- tick path (synchronous, never blocks) ----------------------------------------------------
    def on_tick(self, result: TickResult) -> None:
        campaign = self.campaign
        if not result.events:
            return
        owner = {e: k for k, e in campaign.accounts.items()}
        for eid, events in result.events.items():
            account = owner.get(eid)
            if account is None or eid in self.unsaved:
                continue
            for kind, res, balance in events:
                if kind != EV_BALANCE:
                    continue
                before = self._balance.get((eid, res), 0)
                self._balance[(eid, res)] = balance
                amount = balance - before
                if amount == 0:
                    continue
                self.pg.record_transaction(
                    LedgerTxn(
                        txn_id=f"{campaign.campaign_id}:{result.tick}:{eid}:{res}",
                        account_id=account,
                        campaign_id=campaign.campaign_id,
                        tick=result.tick,
                        kind="credit" if amount > 0 else "debit",
                        resource=int(res),
                        amount=int(amount),
                        balance_after=int(balance),
                    )
                )
                self.ledger_rows += 1

    def save(self, eids: list[int] | None = None) -> int:
        """Queue progress rows for `eids` (default: every ship in the world)."""
        campaign = self.campaign
        n = 0
        for account, eid in sorted(campaign.accounts.items()):
            if (eids is not None and eid not in eids) or eid in self.unsaved:
                continue
            p = player_progress(campaign, eid)
            self.pg.upsert_progress(
                Progress(
                    account_id=account,
                    campaign_id=campaign.campaign_id,
                    tick=campaign.tick_count,
                    resources=p["resources"],
                    buildings=int(p.get("buildings", 0)),
                    achievements=int(p.get("achievements", 0)),
                    last_x=p.get("x"),
                    last_y=p.get("y"),
                    last_vx=p.get("vx"),
                    last_vy=p.get("vy"),
                    txn_last=int(p.get("txn_last", 0)),
                )
            )
            n += 1
        return n

    def prime(self) -> None:
        """Learn every ship's current balances (at start-up, after a recovery)."""
        for eid in self.campaign.accounts.values():
            self._learn(eid)

    def joined(self, eid: int, account: str, display_name: str) -> None:
        self.pg.upsert_account(account, display_name)
        self._learn(eid)

    def _learn(self, eid: int) -> None:
        for res, amount in player_progress(self.campaign, eid)["resources"].items():
            self._balance[(eid, int(res))] = amount

    def forget(self, eid: int) -> None:
        self.unsaved.discard(eid)
        for res in range(len(self.campaign.game.resources)):
            self._balance.pop((eid, res), None)


def player_progress(campaign: Campaign, eid: int) -> dict[str, Any]:
    """A player ship's durable progress (the game's `progress`: resources, durable fields) and its
    position and velocity, from the world arrays."""
    out = campaign.game.progress(campaign.world, eid & SLOT_MASK)
    for f in ("x", "y", "vx", "vy"):
        v = campaign.player_value(eid, f)
        if v is not None:
            out[f] = float(v)
    return out
