"""Per-connection latency, measured by the server, and the lag-compensation rewind it allows.

The server pings each player's WebSocket (a control frame every client's WebSocket stack answers
by itself, the browser's included) and keeps an RFC 6298 estimate of the round trip. A
lag-compensated action may then claim to have been aimed at what the client displayed at most

    RTT/2 (its input's way here) + the interpolation delay (what the client renders behind the
    newest snapshot: two send intervals, netcode/prediction.py) + a jitter margin (4·RTTVAR + 50 ms)

ago, capped by the game's `max_rewind`. The bound travels with each input in the input batch's
`bound` column, which the journal keeps, so a replay refuses and accepts exactly what the server
did (sim/history.py `rewind_ok`). A client can only make its own pongs later than they are, and
so claim at most `max_rewind`: the bound never lets anyone rewind further than the game allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

PING_INTERVAL_S: Final = 1.0  # one RTT sample per second per player of a lag-compensated game
JITTER_FLOOR_S: Final = 0.05
INTERP_SEND_INTERVALS: Final = 2.0
_ALPHA: Final = 0.125
_BETA: Final = 0.25


@dataclass(slots=True)
class Latency:
    """One connection's round-trip estimate (seconds) and the ping in flight."""

    srtt: float | None = None
    rttvar: float = 0.0
    ping_id: int = 0  # the id of the newest ping sent (its payload); older pongs are ignored
    ping_at: float = -math.inf  # when it was sent (loop time)
    waiting: bool = False  # its pong has not come yet
    bound: int = 0  # the rewind bound in ticks from the newest estimate; 0 = none yet

    def sample(self, rtt: float) -> None:
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += _BETA * (abs(self.srtt - rtt) - self.rttvar)
            self.srtt += _ALPHA * (rtt - self.srtt)


def rewind_bound(latency: Latency, tick_rate: int, send_rate: int, max_rewind: int) -> int:
    """Ticks of rewind the connection may claim (1..max_rewind), or 0 before any sample."""
    if latency.srtt is None or max_rewind <= 0:
        return 0
    seconds = latency.srtt / 2 + INTERP_SEND_INTERVALS / send_rate + JITTER_FLOOR_S + 4 * latency.rttvar
    return max(1, min(max_rewind, math.ceil(seconds * tick_rate)))
