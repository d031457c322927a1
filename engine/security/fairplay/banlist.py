"""The bans in force, in memory: the index every connection and hello is checked against.

The durable copy lives in the fair-play store (persistence/fairplay_store.py: the campaign's
SQLite by default, PostgreSQL when configured). Ban ids below zero are provisional: a ban the
policy just decided is enforced at once, before the store has written it and given it an id.
"""

from __future__ import annotations

import contextlib

from persistence.fairplay_records import BanRecord, normalize_ip_range


class BanList:
    def __init__(self, campaign: str | None) -> None:
        self.campaign = campaign
        self._bans: dict[int, BanRecord] = {}
        self._next_provisional = -1

    def __len__(self) -> int:
        return len(self._bans)

    def add(self, ban: BanRecord) -> None:
        self._bans[ban.ban_id] = ban

    def provisional_id(self) -> int:
        self._next_provisional -= 1
        return self._next_provisional

    def remove(self, ban_id: int) -> None:
        self._bans.pop(ban_id, None)

    def lift(self, account: str | None, ip_range: str | None) -> int:
        if ip_range is not None:  # bans hold canonical ranges ("127.0.0.1" is "127.0.0.1/32")
            with contextlib.suppress(ValueError):
                ip_range = normalize_ip_range(ip_range)
        gone = [
            k for k, b in self._bans.items()
            if (account is not None and b.account == account) or (ip_range is not None and b.ip_range == ip_range)
        ]  # fmt: skip
        for k in gone:
            del self._bans[k]
        return len(gone)

    def find(self, now: float, account: str | None = None, ip: str | None = None) -> BanRecord | None:
        """The ban in force for this account or address, if any; expired ones are dropped."""
        found = None
        for ban_id, ban in list(self._bans.items()):
            if not ban.active(now):
                del self._bans[ban_id]
            elif found is None and ban.applies_to(account=account, ip=ip, campaign=self.campaign, now=now):
                found = ban
        return found
