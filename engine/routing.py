"""Which campaign a request or a connection is for, on a host of many campaigns behind one port.

By path: `/c/{campaign}` and everything under it (`/c/{campaign}/`, `/info`, `/play`, `/watch`,
`/web/config.json`, ...). By join token: a hello on `/` goes to the campaign its token's audience
names. The audience is read here without checking the signature, only to pick the campaign; that
campaign's own verifier then checks everything (engine/security/auth.py), audience included.
"""

from __future__ import annotations

import re
from typing import Final

import jwt

PREFIX: Final = "/c/"
# The same shape as a campaign's directory name (persistence/campaign_store.py).
_CAMPAIGN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def valid_campaign_id(cid: str) -> bool:
    return bool(_CAMPAIGN.fullmatch(cid)) and cid not in {".", ".."}


def split_campaign_path(path: str) -> tuple[str | None, str]:
    """("id", the rest of the path, "" or starting with "/") for /c/{id}[/...]; (None, path) otherwise.
    An id of the wrong shape is returned as "" (no campaign can have it)."""
    if not path.startswith(PREFIX):
        return None, path
    cid, sep, rest = path[len(PREFIX) :].partition("/")
    if not valid_campaign_id(cid):
        return "", ""
    return cid, sep + rest


def token_audience(token: str) -> str | None:
    """The campaign a join token names (unverified), or None when it names none that could be."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    aud = claims.get("aud") if isinstance(claims, dict) else None
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    return aud if isinstance(aud, str) and valid_campaign_id(aud) else None
