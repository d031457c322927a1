"""Time-limited TURN credentials ("REST API for TURN", draft-uberti-behave-turn-rest-00), as coturn
checks them with `use-auth-secret` / `static-auth-secret`:

    username   = "<expiry unix time>:<account>"
    credential = base64(HMAC-SHA1(secret, username))

The server never stores a TURN password: any coturn that shares the secret accepts the pair until
the expiry, and a leaked pair dies with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any


def turn_credentials(secret: str, account: str, now: float, ttl: int) -> tuple[str, str]:
    """(username, credential) valid until `now + ttl` (unix seconds)."""
    # ":" separates the expiry from the account in coturn's parser; keep the account free of it.
    username = f"{int(now) + int(ttl)}:{account.replace(':', '_')}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(urls: Sequence[str], secret: str, account: str, now: float, ttl: int) -> list[dict[str, Any]]:
    """The RTCIceServer list a client gets (empty when no TURN server is configured)."""
    if not urls or not secret:
        return []
    username, credential = turn_credentials(secret, account, now, ttl)
    return [{"urls": list(urls), "username": username, "credential": credential}]
