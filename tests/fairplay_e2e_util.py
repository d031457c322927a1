"""Helpers of the fair-play end-to-end tests: a god's view of the world (read a player's value,
place a ship at a planet), paced cheating until the policy escalates, and the ladder check."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.security.auth import TokenVerifier
from engine.security.fairplay.kinds import kind_name
from engine.server import GameServer
from netcode.client import ArbiterClient, ServerError
from netcode.protocol import CloseCode, ErrorCode
from sim.entities import SLOT_MASK
from tests.serverutil import running_server, url

STATE_KINDS = {"speed", "ledger", "negative_balance"}


# -- helpers ------------------------------------------------------------------------------------------
def pv(server: GameServer, eid: int, name: str) -> Any:
    """A player's value of a world array, while that ship is still the player's (None after it left)."""
    if eid not in server.by_eid:
        return None
    return server.campaign.player_value(eid, name)


def planets(server: GameServer, res: int | None = None, min_deposit: int = 3000) -> list[int]:
    a = server.campaign.world.arrays
    dep, kind = a["planet_deposit"], a["planet_res"]
    return [k for k in range(len(dep)) if dep[k] >= min_deposit and (res is None or int(kind[k]) == res)]


def park(server: GameServer, eid: int, planet: int) -> None:
    """Put a ship at rest on a planet (positions only; see the module docstring)."""
    a = server.campaign.world.arrays
    slot = eid & SLOT_MASK
    p = slot - server.campaign.player_lo
    a["x"][slot], a["y"][slot] = a["x"][planet], a["y"][planet]
    for name in ("vx", "vy", "tx", "ty"):
        a[name][slot] = 0.0
    a["last_x"][p], a["last_y"][p] = a["x"][slot], a["y"][slot]


def farthest_planet(server: GameServer, eid: int) -> tuple[int, float]:
    a = server.campaign.world.arrays
    slot = eid & SLOT_MASK
    n = len(a["planet_deposit"])
    d = [math.hypot(float(a["x"][k] - a["x"][slot]), float(a["y"][k] - a["y"][slot])) for k in range(n)]
    k = max(range(n), key=d.__getitem__)
    return k, d[k]


def events_of(c: ArbiterClient, kind: int) -> list[tuple[int, int, int]]:
    return [e for e in c.events if e[0] == kind]


async def pace(period: float, nxt: float) -> float:
    """Sleep until `nxt` (the send schedule of a bot, not a readiness wait); the next due time."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, nxt - loop.time()))
    return nxt + period


def evidence_kinds(server: GameServer, account: str) -> set[str]:
    rec = server.fairplay.referee.policy.record("acct:" + account)
    if rec is None:
        return set()
    return {kind_name(v.kind) for v in rec.evidence}


def server_with_verifier(
    verifier: TokenVerifier, **overrides: Any
) -> contextlib.AbstractAsyncContextManager[GameServer]:
    """tests/serverutil.running_server, with join tokens on."""
    return running_server(verifier, **overrides)


@dataclass
class Escalation:
    """What one cheating account went through, connection after connection."""

    account: str
    closes: list[int] = field(default_factory=list)  # close code of each connection
    errors: list[list[int]] = field(default_factory=list)  # err codes received on each connection
    refused_after_ban: int | None = None  # err code of the hello after the ban
    notes: dict[str, Any] = field(default_factory=dict)


Play = Callable[[ArbiterClient, int, Escalation], Awaitable[None]]


async def escalate(
    server: GameServer, account: str, play: Play, *, max_conns: int = 8, budget: float = 25.0
) -> Escalation:
    """Connect as `account` and cheat (`play`, until the server closes the connection), again and
    again, until the account is banned; then check that a new hello is refused."""
    out = Escalation(account)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    for rnd in range(max_conns):
        c = await ArbiterClient.connect(url(server), account)
        await asyncio.wait_for(play(c, rnd, out), max(0.1, deadline - loop.time()))
        code, _ = await c.wait_closed(5.0)
        out.closes.append(code)
        out.errors.append([e.code for e in c.errors])
        if code == CloseCode.BANNED:
            with pytest.raises(ServerError) as exc:
                await ArbiterClient.connect(url(server), account)
            out.refused_after_ban = exc.value.code
            return out
        assert loop.time() < deadline, f"{account}: not banned within {budget} s: {out}"
    raise AssertionError(f"{account}: not banned after {max_conns} connections: {out}")


def check_ladder(e: Escalation, also: frozenset[int] = frozenset()) -> None:
    """Warned, kicked (4005), then banned (err 21 + 4007); the next hello refused with 21. `also`:
    other close codes the class may meet on the way (the session's own limits on bad frames).

    The warning is checked when it can have been delivered: a warning decided when the connection
    was already closing (a frame beyond the transport's limit) reaches nobody, and the policy warns once."""
    allowed = {CloseCode.KICKED, CloseCode.BANNED} | also
    assert set(e.closes) <= allowed, e
    assert CloseCode.KICKED in e.closes, e
    kicked = e.closes.index(CloseCode.KICKED)
    assert e.closes[-1] == CloseCode.BANNED and kicked < len(e.closes) - 1, e
    if e.closes[0] != CloseCode.TOO_BIG:
        warned_at = next((i for i, errs in enumerate(e.errors) if ErrorCode.WARNED in errs), None)
        assert warned_at is not None and warned_at <= kicked, e
    assert ErrorCode.BANNED in e.errors[-1], e
    assert e.refused_after_ban == ErrorCode.BANNED, e
