"""locust load test: each User is a player speaking Arbiter's real protocol through the SDK.

    locust -f bench/locustfile.py --headless -u 500 -r 50 -t 60s --host ws://127.0.0.1:8765/
    locust -f bench/locustfile.py --headless -u 2000 -r 100 -t 120s --processes 2 --host ws://HOST:8765/

Each user joins (through the hub with `--hub URL --hub-token T --campaign ID`, or straight to
`--host` with a join token minted from $ARBITER_JWT_SECRET/KEYS/KEYFILE when set), then plays like
the honest bots (engine/tools/bots.py: startales' harvest-and-build brain, wander's random walk) at
`--input-rate` inputs per second. Reported as locust request events (type "WS"):

- `join`: connect + hello → welcome;
- `input_ack`: from sending an input to the first snapshot acknowledging it (with a journal, that is
  when the server committed it: docs/durability.md);
- `snapshot_interval`: time between two snapshots (50 ms at the default 20 Hz send rate).

locust runs on gevent and monkeypatches the standard library on import; the SDK's asyncio client
would need a loop per greenlet. Users therefore use `netcode.sync_client.SyncArbiterClient`: the
same Sans-I/O session over websockets' synchronous client, which runs on gevent's sockets. See
README ("Load testing with locust") for figures and pitfalls.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import numpy as np
from locust import User, events, task
from locust.exception import StopUser

from engine.tools.bots import BotView, brain_for
from netcode.client_session import Snapshot
from netcode.hub_locator import hub_join
from netcode.sync_client import SyncArbiterClient

_ids = itertools.count()


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    g = parser.add_argument_group("arbiter")
    g.add_argument("--campaign", default="default", help="campaign id (join tokens and hub joins)")
    g.add_argument("--hub", default="", help="hub base URL: join through POST /v1/campaigns/{id}/join")
    g.add_argument("--hub-token", default=os.environ.get("ARBITER_HUB_TOKEN", ""),
                   help="hub access token for --hub (default $ARBITER_HUB_TOKEN)")  # fmt: skip
    g.add_argument("--input-rate", type=float, default=20.0, help="inputs per second per user")


def _token_factory(campaign: str) -> Any:
    """account → join token, minted with the server's keys when they are in the environment."""
    from engine.security.auth import KeyRing, TokenIssuer

    ring = KeyRing.from_optional_env()
    if ring is None:
        return None
    issuer = TokenIssuer(ring)
    return lambda account: str(issuer.issue(account, campaign, name=account, ttl=600))


class ArbiterUser(User):
    """One player. The task paces itself (one input per period, reading snapshots in between)."""

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.account = f"locust-{os.getpid()}-{next(_ids)}"
        self.period = 1.0 / max(0.1, float(getattr(opts, "input_rate", 20.0)))
        t0 = time.perf_counter()
        try:
            url, token = self._where(opts)
            self.player = SyncArbiterClient.connect(url, self.account[:32], token)
        except Exception as exc:
            self._fire("join", time.perf_counter() - t0, exc)
            raise StopUser() from exc
        self._fire("join", time.perf_counter() - t0)
        welcome = self.player.welcome
        assert welcome is not None
        rng = np.random.default_rng(abs(hash(self.account)) % 2**32)
        # The game's own brain (honest players), or the generic one for a game not installed here.
        self.brain: Any = brain_for(welcome.game)(1, rng, welcome.world, welcome.spec)
        self.next_send = time.monotonic()
        self.last_snapshot_at: float | None = None
        self.last_ack = 0

    def _where(self, opts: Any) -> tuple[str, str]:
        campaign = getattr(opts, "campaign", "default")
        if getattr(opts, "hub", ""):
            return hub_join(opts.hub, campaign, opts.hub_token)
        make: Any = getattr(self.environment, "_arbiter_tokens", False)
        if make is False:
            make = _token_factory(campaign)
            self.environment._arbiter_tokens = make
        return str(self.host), make(self.account) if make else ""

    def _fire(self, name: str, seconds: float, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name, response_time=seconds * 1000.0,
                                             response_length=0, exception=exc, context={})  # fmt: skip

    @task
    def play(self) -> None:
        c = self.player
        if c.events:
            self.brain.on_events(0, list(c.events))
            c.events.clear()
        snap = c.latest
        view = BotView(snap.tick, c.player, snap.entities) if snap is not None else None
        try:
            c.send_input(**self.brain.next_input(0, view))
            self.next_send += self.period
            now = time.monotonic()
            if self.next_send < now - 1.0:  # far behind (a stalled process): do not burst to catch up
                self.next_send = now
            while (left := self.next_send - time.monotonic()) > 0:
                for ev in c.poll(left):
                    if isinstance(ev, Snapshot):
                        self._on_snapshot(c, ev)
        except Exception as exc:
            self._fire("connection", 0.0, exc)
            raise StopUser() from exc

    def _on_snapshot(self, c: SyncArbiterClient, snap: Snapshot) -> None:
        now = time.monotonic()
        if self.last_snapshot_at is not None:
            self._fire("snapshot_interval", now - self.last_snapshot_at)
        self.last_snapshot_at = now
        if snap.ack_seq > self.last_ack:
            self.last_ack = snap.ack_seq
            latency = c.acked(snap.ack_seq)
            if latency is not None:
                self._fire("input_ack", latency)

    def on_stop(self) -> None:
        player = getattr(self, "player", None)
        if player is not None:
            player.close()
