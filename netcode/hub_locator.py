"""Asking the hub where a campaign runs: `POST /v1/campaigns/{id}/join` → `{"url", "token"}`.

The hub (hub/, docs/hub.md) places the campaign on a server if it is not running and answers with its
WebSocket URL and a fresh, campaign-bound join token. This module is only the client side of that one
call, kept small so that the SDK's reconnection (`netcode.client.Reconnect`) and the load generator
(bench/locustfile.py) depend on nothing else of the hub: `HubLocator` for asyncio clients,
`hub_join` for blocking ones. The caller authenticates with the hub's access token (Bearer).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

JOIN_PATH: Final = "/v1/campaigns/{campaign}/join"


class HubJoinError(ConnectionError):
    """The hub did not give a place to join (refused, waitlisted, unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"hub join: {status} {message}")
        self.status = status


def join_url(hub_url: str, campaign: str) -> str:
    return hub_url.rstrip("/") + JOIN_PATH.format(campaign=urllib.parse.quote(campaign, safe=""))


def parse_join(status: int, text: str) -> tuple[str, str]:
    """(ws_url, join_token) from the hub's answer; HubJoinError for anything else (a waitlist
    position included: the caller retries)."""
    try:
        body: Any = json.loads(text) if text else {}
    except ValueError:
        body = {}
    if status == 200 and isinstance(body, dict):
        url, token = body.get("url"), body.get("token")
        if isinstance(url, str) and url.startswith(("ws://", "wss://")) and isinstance(token, str):
            return url, token
        raise HubJoinError(status, "answer without a ws url and a token")
    message = body.get("message") or body.get("error") if isinstance(body, dict) else None
    raise HubJoinError(status, str(message or text[:200]))


@dataclass(slots=True)
class HubLocator:
    """A `netcode.client.Locator` that asks the hub each time (after a relocation the campaign may
    run elsewhere). `access_token` is the player's hub access token, or a callable that refreshes it."""

    hub_url: str
    campaign: str
    access_token: str | Callable[[], str]
    timeout: float = 5.0

    async def locate(self) -> tuple[str, str]:
        bearer = self.access_token() if callable(self.access_token) else self.access_token
        headers = {"Authorization": f"Bearer {bearer}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.post(join_url(self.hub_url, self.campaign), headers=headers, json={}) as r:  # fmt: skip
                return parse_join(r.status, await r.text())
        except aiohttp.ClientError as exc:
            raise HubJoinError(0, str(exc)) from exc


def hub_join(hub_url: str, campaign: str, access_token: str, timeout: float = 5.0) -> tuple[str, str]:
    """The blocking form of `HubLocator.locate` (gevent-friendly once the stdlib is patched)."""
    req = urllib.request.Request(join_url(hub_url, campaign), data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {access_token}",
                                          "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return parse_join(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        return parse_join(e.code, e.read().decode(errors="replace"))
    except OSError as exc:
        raise HubJoinError(0, str(exc)) from exc
