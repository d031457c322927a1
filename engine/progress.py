"""Durable player data in PostgreSQL: the resource ledger and per-campaign progress.

Fed from the tick without waiting: every balance change the sim reports (EV_BALANCE) becomes one
ledger row with a deterministic transaction id (campaign:tick:entity:resource), so a retried batch
or a replayed journal never writes a row twice; progress rows (balances, buildings, achievements,
last position) are upserted every few seconds and when a player leaves. Everything goes through
`PgWriteBehind`'s bounded buffer; nothing here awaits on the tick.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.campaign import Campaign, TickResult
from persistence.pg_rows import LedgerTxn, Progress
from persistence.pg_writer import PgWriteBehind
from sim.events import EV_BALANCE, EV_BUILT

log = logging.getLogger("arbiter.progress")

RESOURCE_FIELDS = ("bal_metal", "bal_crystal")  # resource id = index (sim/events.py EV_BALANCE)


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
            built = any(kind == EV_BUILT for kind, _, _ in events)
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
                        kind="build" if built and amount < 0 else "harvest",
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
                    buildings=p["buildings"],
                    achievements=p["achievements"],
                    last_x=p["x"],
                    last_y=p["y"],
                    last_vx=p["vx"],
                    last_vy=p["vy"],
                    txn_last=p["txn_last"],
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
        for res in range(len(RESOURCE_FIELDS)):
            self._balance.pop((eid, res), None)


def player_progress(campaign: Campaign, eid: int) -> dict[str, Any]:
    """Balances, buildings, achievements, position and velocity of a player ship, from the world arrays."""
    at = campaign.player_value
    arrays = campaign.world.arrays
    resources = {str(r): int(at(eid, f) or 0) for r, f in enumerate(RESOURCE_FIELDS) if f in arrays}
    return {
        "resources": resources,
        "buildings": int(at(eid, "buildings") or 0),
        "achievements": int(at(eid, "achievements") or 0),
        "txn_last": int(at(eid, "txn_last") or 0),
        "x": float(at(eid, "x") or 0.0),
        "y": float(at(eid, "y") or 0.0),
        "vx": float(at(eid, "vx") or 0.0),
        "vy": float(at(eid, "vy") or 0.0),
    }
