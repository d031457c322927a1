"""Passwords, access tokens, refresh tokens and the revoked-session cache.

- `Passwords`: argon2id (argon2-cffi) in worker threads, at most `hash_concurrency` at once, so a
  flood of logins costs bounded memory; an unknown login is checked against a dummy hash, so it
  takes as long as a wrong password (no timing oracle).
- `AccessTokens`: 15-minute HS256 JWTs signed with the join tokens' key ring (engine/security/auth.py)
  and audience `arbiter:hub`. The session (refresh family) id rides in the `jti`
  (`<family>.<random>`), so a revoked session's access tokens are refused before they expire.
- Refresh tokens: 256 random bits, opaque; PostgreSQL keeps their sha256 (persistence/pg_hub_accounts.py).
- `RevokedSessions`: the families revoked in the last access-token lifetime, in memory in every
  hub process, fed by its own revocations, the bus, and a PostgreSQL poll (so a revocation holds
  even while Redis is down). No request waits on I/O to check it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engine.security.auth import ALGORITHM, AuthCode, AuthError, KeyRing, TokenVerifier
from hub.config import ACCESS_AUDIENCE, HubConfig

log = logging.getLogger("arbiter.hub.sessions")

REFRESH_PREFIX: Final = "rt_"


class Passwords:
    def __init__(self, cfg: HubConfig) -> None:
        self.hasher = PasswordHasher(
            time_cost=cfg.argon2_time_cost,
            memory_cost=cfg.argon2_memory_kib,
            parallelism=cfg.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=max(1, cfg.hash_concurrency), thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(max(1, cfg.hash_concurrency))
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        if cfg.below_owasp:
            log.warning(
                "argon2id at m=%d KiB, t=%d is below OWASP's minimum (m=19456 KiB, t=2): for tests only",
                cfg.argon2_memory_kib, cfg.argon2_time_cost,
            )  # fmt: skip

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def hash(self, password: str) -> str:
        return str(await self._run(self.hasher.hash, password))

    async def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """(matches, a new hash when the stored one used other parameters). `stored` None checks
        against the dummy hash and never matches."""
        target = stored if stored is not None else self._dummy

        def check() -> tuple[bool, str | None]:
            try:
                self.hasher.verify(target, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False, None
            if stored is None:
                return False, None
            return True, self.hasher.hash(password) if self.hasher.check_needs_rehash(stored) else None

        ok, rehash = await self._run(check)
        return bool(ok), rehash

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for."""

    account: str
    role: str
    session: str  # refresh family id
    name: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AccessTokens:
    def __init__(self, keyring: KeyRing, ttl_s: int, revoked: RevokedSessions) -> None:
        self.keyring = keyring
        self.ttl_s = ttl_s
        self.revoked = revoked
        self.verifier = TokenVerifier(keyring, ACCESS_AUDIENCE, max_lifetime=max(ttl_s, 60))

    def issue(self, account: str, session: str, role: str, name: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": account, "aud": ACCESS_AUDIENCE, "role": role, "iat": now, "nbf": now,
                                  "exp": now + self.ttl_s, "jti": f"{session}.{secrets.token_hex(8)}"}  # fmt: skip
        if name:
            claims["name"] = name
        kid, key = self.keyring.signing_key()
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})

    def verify(self, token: str | None) -> Principal:
        """The principal of a valid, unrevoked access token, or AuthError."""
        claims = self.verifier.verify(token, consume=False)
        session, dot, _ = claims.jti.partition(".")
        if not dot or not session:
            raise AuthError(AuthCode.TOKEN_BAD_CLAIMS, "jti without a session")
        if session in self.revoked:
            raise AuthError(AuthCode.TOKEN_EXPIRED, f"session {session} revoked")
        return Principal(claims.account, claims.role, session, claims.name)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def new_refresh_token() -> tuple[str, bytes]:
    """(the token the client keeps, the digest the database keeps)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, refresh_digest(token)


def refresh_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_id(kind: str) -> str:
    """`a_...` accounts, `c_...` campaigns, `s_...` sessions: 80 random bits in hex."""
    return f"{kind}_{secrets.token_hex(10)}"


def device_digest(device_id: str) -> str:
    return hashlib.sha256(b"arbiter-device:" + device_id.encode("utf-8")).hexdigest()


class RevokedSessions:
    """Session ids revoked recently enough that an access token of theirs may still be live."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._until: dict[str, float] = {}

    def add(self, sessions: list[str] | tuple[str, ...], now: float | None = None) -> None:
        t = (time.time() if now is None else now) + self.keep_s
        for s in sessions:
            self._until[s] = t

    def __contains__(self, session: object) -> bool:
        return session in self._until

    def purge(self, now: float | None = None) -> None:
        t = time.time() if now is None else now
        for s in [s for s, until in self._until.items() if until < t]:
            del self._until[s]

    def __len__(self) -> int:
        return len(self._until)
