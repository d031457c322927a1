"""The one source of join tokens in tests: fixed key rings, an issuer and verifiers.

    t = Tokens()                                 # or the `tokens` fixture (conftest.py)
    t.issue("ada", "camp")                       # a token of RING for campaign "camp"
    t.forged("eve", "camp")                      # signed with OTHER: refused as a bad signature
    running_server(t.verifier("camp"), ...)
"""

from __future__ import annotations

from typing import Any

from engine.security.auth import KeyRing, TokenIssuer, TokenVerifier

RING = KeyRing.single("r" * 40)  # the server's key in every test that turns tokens on
OTHER_RING = KeyRing.single("x" * 40)  # a key the servers do not know


class Tokens:
    def __init__(self, ring: KeyRing = RING, other: KeyRing = OTHER_RING) -> None:
        self.ring = ring
        self.other = other
        self.issuer = TokenIssuer(ring)

    def issue(self, account: str, campaign: str, **kw: Any) -> str:
        """A valid token (kw: name, role, ttl, now, ... as `TokenIssuer.issue`)."""
        return str(self.issuer.issue(account, campaign, **kw))

    def forged(self, account: str, campaign: str, **kw: Any) -> str:
        return str(TokenIssuer(self.other).issue(account, campaign, **kw))

    def verifier(self, campaign: str, **kw: Any) -> TokenVerifier:
        return TokenVerifier(self.ring, campaign, **kw)

    def factory(self) -> Any:
        """(account, campaign) -> a fresh token: what `BotConfig.token_factory` takes."""
        return lambda account, campaign: self.issue(account, campaign, name=account, ttl=600)
