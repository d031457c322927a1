"""The referee: violations in, decisions out — warnings, kicks, bans — each with an audit entry.

The server calls it on the tick (`on_tick` with the sim's violations), from the sessions
(`on_protocol`), at TCP accept (`check_connection`), at the upgrade (`check_address_ban`) and at
the hello (`check_hello`). None of these await anything: a ban is enforced at once from memory and
written to the store off the tick; an audit entry is a non-blocking enqueue. The enforcement
itself (closing a socket, sending a warning) is the server's, behind the small `Enforcer`
protocol, so this module knows no sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.security.fairplay.banlist import BanList
from engine.security.fairplay.conn_limit import ConnLimitConfig, ConnLimiter
from engine.security.fairplay.kinds import STATE_KINDS, V_CONN_FLOOD, kind_name
from engine.security.fairplay.policy import Decision, Policy, PolicyConfig, Violation
from persistence.fairplay_records import AuditEntry, BanRecord, FairplayStore, validate_ban

log = logging.getLogger("arbiter.fairplay")

ACCOUNT = "acct:"
ADDRESS = "ip:"


def account_subject(account: str) -> str:
    return ACCOUNT + account


def address_subject(ip: str) -> str:
    return ADDRESS + ip


class Enforcer(Protocol):
    def warn(self, account: str, message: str) -> None: ...

    def close_address(self, ip_range: str, reason: str) -> int:
        """Close every connection from the range; how many were closed."""
        ...

    def kick(self, account: str, reason: str, banned: bool) -> int:
        """Close every connection of `account`; how many were closed."""
        ...


@dataclass(frozen=True, slots=True)
class FairPlayConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    conn: ConnLimitConfig = field(default_factory=ConnLimitConfig)
    timing_signal: bool = True  # statistical signal: robotic input timing (signals.py)
    state_audit_interval_s: float = 10.0  # at most one audit entry per state-check kind this often


class Referee:
    def __init__(
        self,
        cfg: FairPlayConfig,
        store: FairplayStore,
        campaign: str,
        enforcer: Enforcer,
        *,
        replay_path: str = "",
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.replay_path = replay_path  # the campaign dir `arbiter replay` takes ("" = kept in memory)
        self.store = store
        self.campaign = campaign
        self.enforcer = enforcer
        self.policy = Policy(cfg.policy)
        self.bans = BanList(campaign)
        self.conn_limiter = ConnLimiter(cfg.conn)
        self._wall = wall
        self.violations: Counter[str] = Counter()  # by kind name
        self.decisions: Counter[str] = Counter()  # by action
        self.refused_hellos = 0
        self._state_audited: dict[int, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 3.0) -> None:
        """Load the bans in force. A store that cannot answer (PostgreSQL down) does not keep the
        server from starting: it retries in the background, and bans decided meanwhile hold."""
        try:
            await asyncio.wait_for(self._load_bans(), timeout)
        except Exception as exc:
            log.error("bans not loaded (%s); retrying in the background", exc)
            self._loader = asyncio.get_running_loop().create_task(self._load_bans_until_done())

    async def _load_bans(self) -> None:
        for ban in await self.store.load_active_bans(self._wall()):
            self.bans.add(ban)  # added to any provisional ones decided meanwhile
        if len(self.bans):
            log.info("%d bans in force for campaign %s", len(self.bans), self.campaign)

    async def _load_bans_until_done(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self._load_bans()
                return
            except Exception as exc:
                log.warning("bans still not loaded: %s", exc)

    async def close(self) -> None:
        if self._loader is not None:  # a background ban load must not keep shutdown waiting
            self._loader.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=2.0)
            for task in pending:  # a ban write stuck on a dead store: it held while we ran
                log.error("a ban write did not finish before shutdown; cancelled")
                task.cancel()
        await self.store.close(timeout=2.0)

    # -- admission --------------------------------------------------------------------------------
    def check_connection(self, ip: str, now: float) -> str | None:
        """At TCP accept: None to let it in, else why it is refused (a connection flood)."""
        why = self.conn_limiter.allow(ip, now)
        if why is not None:
            self._observe(address_subject(ip), V_CONN_FLOOD, 1.0, float(self.cfg.conn.rate), -1, now)
        return why

    def check_address_ban(self, ip: str) -> BanRecord | None:
        """At the upgrade (the client can then be told why): the ban on this address, if any."""
        return self.bans.find(self._wall(), ip=ip)

    def connection_admitted(self, ip: str) -> None:
        self.conn_limiter.admitted(ip)

    def connection_closed(self, ip: str, admitted: bool) -> None:
        self.conn_limiter.closed(ip, admitted)

    def check_hello(self, account: str, ip: str) -> BanRecord | None:
        ban = self.bans.find(self._wall(), account=account, ip=ip)
        if ban is not None:
            self.refused_hellos += 1
        return ban

    # -- evidence ---------------------------------------------------------------------------------
    def on_tick(
        self,
        tick: int,
        violations: Iterable[tuple[int, int, float, float]],
        account_of: Callable[[int], str | None],
        now: float,
    ) -> None:
        """The sim's violations of one tick; `account_of` gives a player entity's account."""
        for kind, eid, value, limit in violations:
            if kind in STATE_KINDS:
                self._state_violation(tick, kind, eid, value, limit, now)
                continue
            account = account_of(eid)
            if account is None:  # its player is gone; the refusal already neutralized it
                self.violations[kind_name(kind)] += 1
                continue
            self._observe(account_subject(account), kind, value, limit, tick, now)

    def on_protocol(
        self, kind: int, account: str | None, ip: str, value: float, limit: float, tick: int, now: float
    ) -> None:
        """A session-level violation: scored against the account when known, else the address.

        Loopback addresses are counted but not scored unless `conn.loopback` is set: on a developer's
        machine (or behind a local proxy) a misconfigured token must not ban localhost for an hour.
        """
        if not account and self.conn_limiter.exempt(ip):
            self.violations[kind_name(kind)] += 1
            return
        subject = account_subject(account) if account else address_subject(ip)
        self._observe(subject, kind, value, limit, tick, now)

    def _observe(self, subject: str, kind: int, value: float, limit: float, tick: int, now: float) -> None:
        self.violations[kind_name(kind)] += 1
        decision = self.policy.observe(Violation(kind, subject, tick, value, limit), now)
        if decision is not None:
            self._apply(decision)

    def _state_violation(self, tick: int, kind: int, eid: int, value: float, limit: float, now: float) -> None:
        self.violations[kind_name(kind)] += 1
        last = self._state_audited.get(kind)
        if last is not None and now - last < self.cfg.state_audit_interval_s:
            return
        self._state_audited[kind] = now
        log.error(
            "state check failed at tick %d: %s entity %d value %r limit %r", tick, kind_name(kind), eid, value, limit
        )
        v = Violation(kind, f"entity:{eid}", tick, value, limit)
        self._audit("state_violation", None, {"violations": [v.to_json()], "from_tick": tick, "to_tick": tick})

    # -- decisions --------------------------------------------------------------------------------
    def _apply(self, d: Decision) -> None:
        self.decisions[d.action] += 1
        account = d.subject[len(ACCOUNT) :] if d.subject.startswith(ACCOUNT) else None
        ip = d.subject[len(ADDRESS) :] if d.subject.startswith(ADDRESS) else None
        evidence = d.to_json()
        lo, hi = d.tick_range
        if self.replay_path:
            evidence["replay"] = f"arbiter replay {self.replay_path} --from-tick {lo} --to-tick {hi} --violations"
        self._audit(d.action if d.enforced else f"would_{d.action}", account, evidence)
        log.warning("fair play: %s %s (score %.1f, %d violations, ticks %d-%d)%s", d.action, d.subject, d.score,
                    len(d.evidence), lo, hi, "" if d.enforced else " [observe mode]")  # fmt: skip
        if not d.enforced:
            return
        if d.action == "warn":
            if account is not None:
                self.enforcer.warn(account, "fair play: suspicious inputs were refused; continuing may get you kicked")
        elif d.action == "kick":
            if account is not None:
                self.enforcer.kick(account, "kicked for fair-play violations", banned=False)
        elif d.action == "ban":
            names = ", ".join(sorted({kind_name(v.kind) for v in d.evidence}))
            self.ban(account, f"{ip}/32" if ip and ":" not in ip else (f"{ip}/128" if ip else None),
                     f"automatic: {names}", d.ban_s, "policy", audit=False)  # fmt: skip

    def ban(
        self,
        account: str | None,
        ip_range: str | None,
        reason: str,
        duration_s: float | None,
        by: str,
        *,
        audit: bool = True,
    ) -> BanRecord:
        """Enforce a ban now (kick, refuse at hello) and persist it off the tick; the provisional record."""
        now = self._wall()
        until = None if duration_s is None else now + duration_s
        # Validated and normalized as the store will (canonical CIDR, so that an unban by the same
        # range matches it in memory too); ValueError before anything is enforced, not later in the
        # write, which would leave a ban that holds only until this server stops.
        ban = validate_ban(account=account, ip_range=ip_range, campaign=self.campaign, reason=reason,
                           created_by=by, until=until, created_at=now).record(self.bans.provisional_id())  # fmt: skip
        self.bans.add(ban)
        if account is not None:
            self.enforcer.kick(account, f"banned: {reason}", banned=True)
        if ban.ip_range is not None:
            self.enforcer.close_address(ban.ip_range, f"banned: {reason}")
        if audit:
            self._audit("ban", account, {"ban": ban.to_json(), "by": by})
        self._spawn(self._persist_ban(ban))
        return ban

    async def _persist_ban(self, ban: BanRecord) -> BanRecord:
        try:
            stored = await self.store.add_ban(
                account=ban.account, ip_range=ban.ip_range, campaign=ban.campaign, reason=ban.reason,
                created_by=ban.created_by, until=ban.until, created_at=ban.created_at,
            )  # fmt: skip
        except Exception:
            log.exception(
                "ban of %s could not be stored; it holds until this server stops", ban.account or ban.ip_range
            )
            return ban
        self.bans.remove(ban.ban_id)
        self.bans.add(stored)
        return stored

    async def unban(self, account: str | None, ip_range: str | None, by: str) -> int:
        if self._tasks:
            # Bans still being written (ban() persists off the caller): let them land first, or the
            # write would overtake this unban and bring the ban back, in memory and in the store.
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        lifted = self.bans.lift(account, ip_range)
        stored = await self.store.remove_bans(account=account, ip_range=ip_range, by=by)
        self._audit(
            "unban", account, {"account": account, "ip_range": ip_range, "by": by, "lifted": max(lifted, stored)}
        )
        if account is not None:
            s = self.policy.record(account_subject(account))
            if s is not None:  # a lifted ban starts the ladder over
                s.kicks = s.bans = 0
        return max(lifted, stored)

    def _audit(self, action: str, account: str | None, evidence: dict[str, Any]) -> None:
        self.store.append_audit(AuditEntry(action=action, ts=self._wall(), campaign=self.campaign, account=account,
                                           evidence=evidence))  # fmt: skip

    def audit_admin(self, action: str, account: str | None, evidence: dict[str, Any]) -> None:
        self._audit(action, account, evidence)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self.cfg.policy.mode,
            "violations": dict(self.violations),
            "decisions": dict(self.decisions),
            "bans_in_force": len(self.bans),
            "refused_hellos": self.refused_hellos,
            "refused_connections": self.conn_limiter.refused,
            "subjects": len(self.policy),
            "store": self.store.stats(),
        }
