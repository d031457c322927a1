"""Connection floods per IP: a GCRA rate limit on new connections, a cap on open ones and a cap on
the ones not yet playing (accepted, upgrading or waiting for their hello: the unauthenticated phase).
The server asks at TCP accept, before it reads a byte (docs/security.md).

Pure (the caller passes `now`) and bounded: an address's row is dropped once its bucket is full
again and it has no open connection, so a scan from many addresses cannot grow the table without
limit (`max_tracked`; beyond it new addresses are refused, which is what a flood deserves).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnLimitConfig:
    rate: float = 20.0  # new connections per second per IP (0: no limit)
    burst: int = 100
    max_open: int = 0  # open connections per IP (0: no limit)
    max_unauth: int = 16  # connections per IP not yet playing (0: no limit); a NAT's players join a few at a time
    loopback: bool = False  # apply to 127.0.0.0/8 and ::1 too (off: local bots and benches are not floods)
    max_tracked: int = 100_000


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class ConnLimiter:
    def __init__(self, cfg: ConnLimitConfig | None = None) -> None:
        self.cfg = cfg or ConnLimitConfig()
        self._tat: dict[str, float] = {}  # theoretical arrival time of the next connection
        self._open: dict[str, int] = {}
        self._unauth: dict[str, int] = {}
        self.refused = 0

    def exempt(self, ip: str) -> bool:
        """Loopback, unless `loopback` is set: local bots and benches are not floods or abusers."""
        return not self.cfg.loopback and is_loopback(ip)

    def allow(self, ip: str, now: float) -> str | None:
        """None and count the connection as open, or the reason it is refused."""
        cfg = self.cfg
        if self.exempt(ip):
            return None
        if cfg.max_open and self._open.get(ip, 0) >= cfg.max_open:
            self.refused += 1
            return f"more than {cfg.max_open} open connections from {ip}"
        if cfg.max_unauth and self._unauth.get(ip, 0) >= cfg.max_unauth:
            self.refused += 1
            return f"more than {cfg.max_unauth} connections from {ip} not yet playing"
        if cfg.rate > 0:
            period = 1.0 / cfg.rate
            tat = self._tat.get(ip)
            if tat is None:
                if len(self._tat) >= cfg.max_tracked:
                    self.prune(now)
                    if len(self._tat) >= cfg.max_tracked:
                        self.refused += 1
                        return "too many addresses connecting"
                tat = now
            tat = max(tat, now)
            if tat - now > (cfg.burst - 1) * period:
                self.refused += 1
                return f"more than {cfg.rate:g} new connections/s from {ip}"
            self._tat[ip] = tat + period
        self._open[ip] = self._open.get(ip, 0) + 1
        self._unauth[ip] = self._unauth.get(ip, 0) + 1
        return None

    def admitted(self, ip: str) -> None:
        """A connection of `ip` that `allow` let in now plays: it leaves the unauthenticated count."""
        _decrement(self._unauth, ip)

    def closed(self, ip: str, admitted: bool) -> None:
        """A connection that `allow` let in is gone (`admitted`: `admitted(ip)` was called for it)."""
        if self.exempt(ip):
            return
        _decrement(self._open, ip)
        if not admitted:
            _decrement(self._unauth, ip)

    def prune(self, now: float) -> None:
        for ip in [ip for ip, tat in self._tat.items() if tat <= now and ip not in self._open]:
            del self._tat[ip]


def _decrement(counts: dict[str, int], ip: str) -> None:
    n = counts.get(ip, 0) - 1
    if n > 0:
        counts[ip] = n
    else:
        counts.pop(ip, None)
