"""`GET /info` on the game port: what a client needs before it connects (which game, which campaign
its join token must name), so tools such as `arbiter bots` need not be told."""

from __future__ import annotations

import json

from netcode.protocol import PROTOCOL_VERSION


def info_response(game: str, campaign: str, tick_rate: int, send_rate: int) -> tuple[int, str, bytes]:
    body = {"game": game, "campaign": campaign, "protocol_version": PROTOCOL_VERSION, "tick_rate": tick_rate,
            "send_rate": send_rate}  # fmt: skip
    return 200, "application/json", json.dumps(body).encode()
