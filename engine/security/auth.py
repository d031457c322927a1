"""Signed join tokens: HS256 JWTs (PyJWT) that say who may join which campaign, as what, until when.

netcode.io's connect-token idea as a JWT. An account service (later: registration, login, refresh)
authenticates a person and *issues* a short-lived token for one campaign; the engine only
*verifies* it in the hello. See docs/auth.md.

- `KeyRing`: HS256 secrets by key id (`kid`); one active signing key, every key valid for
  verification, so keys rotate without invalidating tokens in flight.
- `TokenIssuer`: mints tokens (the `arbiter token` command, the demo, tests, an account service).
- `TokenVerifier`: checks a token for one campaign and returns `TokenClaims`, or raises `AuthError`
  with an `AuthCode` and a public message that says nothing beyond the code.
- `ReplayCache`: token ids (`jti`) seen within their lifetime, bounded in memory.
- `bearer_claims`: the admin HTTP API's `Authorization: Bearer` check (401 / 403).

Nothing here awaits or touches a socket; the verifier's clock is injectable (wall-clock seconds,
because `iat`/`nbf`/`exp` are Unix times).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Literal, Protocol, runtime_checkable

import jwt

from engine.security.token_replay import ReplayCache
from netcode.protocol import MAX_TOKEN_BYTES

log = logging.getLogger("arbiter.auth")

ALGORITHM: Final = "HS256"
ALGORITHMS: Final = (ALGORITHM,)  # pinned: never "none", never taken from the token
MIN_SECRET_BYTES: Final = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash output
DEFAULT_TTL: Final = 3600
MAX_TTL: Final = 86400  # longest token lifetime the issuer mints and the verifier accepts
DEFAULT_LEEWAY: Final = 5.0
MAX_ACCOUNT_LEN: Final = 256
MAX_NAME_LEN: Final = 32  # the hello's display-name rule (docs/protocol.md)
MAX_JTI_LEN: Final = 128
AUTH_CLOSE_CODE: Final = 4006  # suggested CloseCode.UNAUTHORIZED for a refused hello

ENV_SECRET: Final = "ARBITER_JWT_SECRET"
ENV_KEYS: Final = "ARBITER_JWT_KEYS"
ENV_KEYFILE: Final = "ARBITER_JWT_KEYFILE"

Role = Literal["player", "admin"]
ROLES: Final[tuple[str, ...]] = ("player", "admin")

_KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_REQUIRED: Final = ("sub", "aud", "iat", "exp", "jti")


# -- errors -----------------------------------------------------------------------------------------
class AuthCode(IntEnum):
    """`err` codes for refused tokens; continues netcode.protocol.ErrorCode (1..9)."""

    TOKEN_MISSING = 10
    TOKEN_MALFORMED = 11
    TOKEN_BAD_SIGNATURE = 12  # wrong key, unknown kid, forbidden alg ("none", HS512, RS256, ...)
    TOKEN_EXPIRED = 13
    TOKEN_NOT_YET_VALID = 14  # nbf (or iat) in the future beyond the leeway
    TOKEN_WRONG_CAMPAIGN = 15  # aud is not this campaign
    TOKEN_REPLAYED = 16  # jti already used within its lifetime
    TOKEN_BAD_CLAIMS = 17  # a required claim missing or ill-typed, unknown role, lifetime too long
    FORBIDDEN = 18  # a valid token without the role a route needs (HTTP 403)


# Fixed per code: a client learns the code and nothing else (no expected campaign, no kid list).
PUBLIC_MESSAGES: Final[Mapping[AuthCode, str]] = {
    AuthCode.TOKEN_MISSING: "token missing",
    AuthCode.TOKEN_MALFORMED: "token malformed",
    AuthCode.TOKEN_BAD_SIGNATURE: "token signature invalid",
    AuthCode.TOKEN_EXPIRED: "token expired",
    AuthCode.TOKEN_NOT_YET_VALID: "token not yet valid",
    AuthCode.TOKEN_WRONG_CAMPAIGN: "token not valid for this campaign",
    AuthCode.TOKEN_REPLAYED: "token already used",
    AuthCode.TOKEN_BAD_CLAIMS: "token claims invalid",
    AuthCode.FORBIDDEN: "forbidden",
}


class AuthError(Exception):
    """A refused token. `str(err)` is the public message; `detail` is for server logs only."""

    def __init__(self, code: AuthCode, detail: str = "") -> None:
        self.code = code
        self.public_message = PUBLIC_MESSAGES[code]
        self.detail = detail
        super().__init__(self.public_message)

    @property
    def http_status(self) -> int:
        """401 (authenticate, with `WWW-Authenticate: Bearer`) or 403 (authenticated, not allowed)."""
        return 403 if self.code is AuthCode.FORBIDDEN else 401

    def __repr__(self) -> str:
        return f"AuthError({self.code.name}, {self.detail!r})"


class KeyConfigError(ValueError):
    """The signing keys are misconfigured (short secret, bad kid, unreadable key file, ...)."""


class NoKeyConfigured(KeyConfigError):  # noqa: N818 - reads better at the call site
    """None of ARBITER_JWT_SECRET / ARBITER_JWT_KEYS / ARBITER_JWT_KEYFILE is set."""


def secret_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets in constant time (never `==` on a secret)."""
    ab = a.encode() if isinstance(a, str) else a
    bb = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(ab, bb)


# -- keys -------------------------------------------------------------------------------------------
def _secret_bytes(kid: str, secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        raise KeyConfigError(f"secret for key {kid!r} is {len(raw)} bytes; at least {MIN_SECRET_BYTES} are required")
    return raw


def _check_kid(kid: object) -> str:
    if not isinstance(kid, str) or not _KID_RE.match(kid):
        raise KeyConfigError(f"key id {kid!r} must be 1..64 characters of A-Z a-z 0-9 . _ -")
    return kid


class KeyRing:
    """HS256 secrets by key id. Signs with `active_kid`; verifies with any key it holds.

    Rotation: add the new key, make it active (new tokens use it), keep the old one until every
    token signed with it has expired (≤ MAX_TTL), then remove it. Not thread-safe for mutation;
    the engine mutates it on its loop only (or swaps in a new ring: `verifier.keyring = ring`).
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, str | bytes], active: str) -> None:
        if not keys:
            raise KeyConfigError("a key ring needs at least one key")
        self._keys: dict[str, bytes] = {_check_kid(k): _secret_bytes(k, s) for k, s in keys.items()}
        if active not in self._keys:
            raise KeyConfigError(f"active key {active!r} is not in the key ring")
        self._active = active

    # construction
    @classmethod
    def single(cls, secret: str | bytes, kid: str = "default") -> KeyRing:
        return cls({kid: secret}, kid)

    @classmethod
    def generate(cls, kid: str = "ephemeral") -> KeyRing:
        """A random one-off ring (e.g. `arbiter demo`); `to_env()` hands it to a child process."""
        return cls.single(secrets.token_urlsafe(48), kid)  # 64 chars, 384 bits

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        """Keys from exactly one of ARBITER_JWT_SECRET, ARBITER_JWT_KEYS, ARBITER_JWT_KEYFILE.

        - ARBITER_JWT_SECRET=secret: one key, kid "default".
        - ARBITER_JWT_KEYS=kid1:secret1,kid2:secret2: the first is active.
        - ARBITER_JWT_KEYFILE=path: JSON {"active": kid, "keys": {kid: secret, ...}}.

        Raises NoKeyConfigured when none is set, KeyConfigError when it is wrong or more than one
        is set (an ambiguous configuration is refused rather than guessed).
        """
        env = os.environ if environ is None else environ
        present = [n for n in (ENV_SECRET, ENV_KEYS, ENV_KEYFILE) if env.get(n)]
        if not present:
            raise NoKeyConfigured(f"no signing key configured: set {ENV_SECRET}, {ENV_KEYS} or {ENV_KEYFILE}")
        if len(present) > 1:
            raise KeyConfigError(f"set only one of {', '.join(present)}")
        name = present[0]
        value = env[name]
        if name == ENV_SECRET:
            return cls.single(value)
        if name == ENV_KEYS:
            return cls.parse_pairs(value)
        return cls.from_file(value)

    @classmethod
    def from_optional_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing | None:
        """Like from_env, but None when no key is configured (auth off); still raises on bad config."""
        try:
            return cls.from_env(environ)
        except NoKeyConfigured:
            return None

    @classmethod
    def parse_pairs(cls, text: str) -> KeyRing:
        keys: dict[str, str] = {}
        first = ""
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            kid, sep, secret = item.partition(":")
            kid = kid.strip()
            if not sep:
                raise KeyConfigError(f"{ENV_KEYS} expects kid:secret pairs separated by commas")
            if kid in keys:
                raise KeyConfigError(f"key id {kid!r} appears twice in {ENV_KEYS}")
            keys[kid] = secret
            first = first or kid
        if not keys:
            raise KeyConfigError(f"{ENV_KEYS} holds no key")
        return cls(keys, first)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        try:
            with open(path, encoding="utf-8") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                data = json.load(fh)
        except (OSError, ValueError) as e:
            raise KeyConfigError(f"cannot read key file {os.fspath(path)!r}: {e.__class__.__name__}") from e
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file %s is accessible by group/others; chmod 600 it", os.fspath(path))
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict) or not data["keys"]:
            raise KeyConfigError('key file must be a JSON object {"active": kid, "keys": {kid: secret}}')
        keys = data["keys"]
        if not all(isinstance(s, str) for s in keys.values()):
            raise KeyConfigError("key file secrets must be strings")
        active = data.get("active")
        if active is None and len(keys) == 1:
            active = next(iter(keys))
        if not isinstance(active, str):
            raise KeyConfigError('key file needs "active": the key id that signs')
        return cls(keys, active)

    def to_env(self) -> dict[str, str]:
        """Environment for a child process holding the same keys (active first)."""
        order = [self._active, *(k for k in self._keys if k != self._active)]
        pairs = []
        for kid in order:
            secret = self._keys[kid].decode("utf-8")  # raises for binary secrets; generate() is text
            if "," in secret:
                raise KeyConfigError(f"secret for key {kid!r} contains ',' and cannot go into {ENV_KEYS}")
            pairs.append(f"{kid}:{secret}")
        return {ENV_KEYS: ",".join(pairs)}

    # use
    @property
    def active_kid(self) -> str:
        return self._active

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def signing_key(self) -> tuple[str, bytes]:
        return self._active, self._keys[self._active]

    def key_for(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    # rotation
    def add(self, kid: str, secret: str | bytes, *, activate: bool = False) -> None:
        if kid in self._keys:
            raise KeyConfigError(f"key id {kid!r} already present")
        self._keys[_check_kid(kid)] = _secret_bytes(kid, secret)
        if activate:
            self._active = kid

    def activate(self, kid: str) -> None:
        if kid not in self._keys:
            raise KeyConfigError(f"unknown key id {kid!r}")
        self._active = kid

    def remove(self, kid: str) -> None:
        if kid == self._active:
            raise KeyConfigError("cannot remove the active key; activate another first")
        if self._keys.pop(kid, None) is None:
            raise KeyConfigError(f"unknown key id {kid!r}")

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __repr__(self) -> str:  # never the secrets
        return f"KeyRing(active={self._active!r}, kids={list(self._keys)!r})"


# -- claims -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says. `name` is None when the token does not pin a display name."""

    account: str
    name: str | None
    campaign: str
    role: Role
    iat: int
    nbf: int
    exp: int
    jti: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and 1 <= len(name) <= MAX_NAME_LEN and name.isprintable()


# -- issuing ----------------------------------------------------------------------------------------
class TokenIssuer:
    """Mints join tokens signed with the ring's active key."""

    def __init__(self, keyring: KeyRing, *, max_ttl: int = MAX_TTL) -> None:
        self.keyring = keyring
        self.max_ttl = max_ttl

    def issue(
        self,
        account: str,
        campaign: str,
        role: Role | str = "player",
        ttl: int = DEFAULT_TTL,
        name: str | None = None,
        now: float | None = None,
    ) -> str:
        if not isinstance(account, str) or not 1 <= len(account) <= MAX_ACCOUNT_LEN:
            raise ValueError(f"account must be a string of 1..{MAX_ACCOUNT_LEN} characters")
        if not isinstance(campaign, str) or not campaign:
            raise ValueError("campaign must be a non-empty string")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= self.max_ttl:
            raise ValueError(f"ttl must be an integer number of seconds in 1..{self.max_ttl}")
        if name is not None and not _valid_name(name):
            raise ValueError(f"name must be 1..{MAX_NAME_LEN} printable characters")
        iat = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": account,
            "aud": campaign,
            "role": role,
            "iat": iat,
            "nbf": iat,
            "exp": iat + ttl,
            "jti": secrets.token_hex(16),  # 128 random bits
        }
        if name is not None:
            claims["name"] = name
        kid, key = self.keyring.signing_key()
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
        if len(token) > MAX_TOKEN_BYTES:
            raise ValueError(f"token is {len(token)} bytes; the hello carries at most {MAX_TOKEN_BYTES}")
        return token


# -- replay -----------------------------------------------------------------------------------------
# -- verifying --------------------------------------------------------------------------------------
def _b64url_decode(segment: str) -> bytes:
    if len(segment) % 4 == 1:
        raise ValueError("bad base64url length")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _reject_constant(c: str) -> Any:
    raise ValueError(c)


class TokenVerifier:
    """Verifies join tokens for one campaign.

    Order of checks (the first failure wins): missing → shape (3 base64url segments, ≤ 4096 bytes,
    JSON header) → key id known and alg pinned to HS256 → `jwt.decode`: signature, required claims,
    iat/nbf/exp (wall clock, `leeway`), audience → Arbiter's rules (account and token id shapes,
    role, name, lifetime ≤ `max_lifetime`) → replay (`clock` dates the replay cache's entries).
    Nothing about the claims is looked at before the signature holds.
    """

    def __init__(
        self,
        keyring: KeyRing,
        campaign: str,
        leeway: float = DEFAULT_LEEWAY,
        clock: Callable[[], float] = time.time,
        replay: ReplayCache | None = None,
        max_lifetime: int = MAX_TTL,
    ) -> None:
        if not campaign:
            raise ValueError("campaign must be non-empty")
        self.keyring = keyring
        self.campaign = campaign
        self.leeway = float(leeway)
        self.clock = clock
        self.replay = replay if replay is not None else ReplayCache()
        self.max_lifetime = max_lifetime

    def verify(self, token: str | None, *, consume: bool = True) -> TokenClaims:
        """The token's claims, or AuthError. `consume=False` skips the replay check (admin bearer
        tokens are presented on every HTTP request; join tokens are single-use)."""
        if not token:
            raise AuthError(AuthCode.TOKEN_MISSING)
        if not isinstance(token, str):
            raise AuthError(AuthCode.TOKEN_MALFORMED, "token is not a string")
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise AuthError(AuthCode.TOKEN_MALFORMED, "token too long or not ASCII")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts[:2]) or not all(_B64URL_RE.match(p) for p in parts):
            raise AuthError(AuthCode.TOKEN_MALFORMED, f"{len(parts)} segments or bad base64url")
        try:  # the charset is checked above; decoding the header here spares PyJWT a second parse
            header = json.loads(_b64url_decode(parts[0]), parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError):
            raise AuthError(AuthCode.TOKEN_MALFORMED, "header is not base64url JSON") from None
        if not isinstance(header, dict):
            raise AuthError(AuthCode.TOKEN_MALFORMED, "header is not a JSON object")
        # RFC 7797 unencoded payloads and critical extensions are never issued here: refuse them.
        if "b64" in header or "crit" in header:
            raise AuthError(AuthCode.TOKEN_MALFORMED, "b64/crit header")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError(AuthCode.TOKEN_BAD_SIGNATURE, "no kid")
        key = self.keyring.key_for(kid)
        if key is None:
            raise AuthError(AuthCode.TOKEN_BAD_SIGNATURE, f"unknown kid {kid[:64]!r}")
        if header.get("alg") != ALGORITHM:
            raise AuthError(AuthCode.TOKEN_BAD_SIGNATURE, f"alg {str(header.get('alg'))[:16]!r} not allowed")
        try:
            # PyJWT checks the HMAC (hmac.compare_digest, algorithms pinned, not from the token), the
            # required claims, iat/nbf/exp against the wall clock with the leeway, and the audience.
            claims = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=self.campaign, leeway=self.leeway,
                options={"require": list(_REQUIRED), "verify_sub": True, "verify_jti": True},
            )  # fmt: skip
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as e:
            raise AuthError(AuthCode.TOKEN_BAD_SIGNATURE, str(e)) from None
        except jwt.ExpiredSignatureError as e:
            raise AuthError(AuthCode.TOKEN_EXPIRED, str(e)) from None
        except jwt.ImmatureSignatureError as e:
            raise AuthError(AuthCode.TOKEN_NOT_YET_VALID, str(e)) from None
        except jwt.InvalidAudienceError as e:
            raise AuthError(AuthCode.TOKEN_WRONG_CAMPAIGN, str(e)) from None
        except (jwt.MissingRequiredClaimError, jwt.InvalidIssuedAtError, jwt.exceptions.InvalidSubjectError,
                jwt.exceptions.InvalidJTIError) as e:  # fmt: skip
            raise AuthError(AuthCode.TOKEN_BAD_CLAIMS, str(e)) from None
        except jwt.InvalidTokenError as e:
            raise AuthError(AuthCode.TOKEN_MALFORMED, str(e)) from None
        return self._check_claims(claims, consume)

    def _check_claims(self, claims: dict[str, Any], consume: bool) -> TokenClaims:
        """Arbiter's own rules on a token PyJWT accepted: the account id and token id shapes, the
        role, the display name, the lifetime cap; then the replay cache (last: a refused token
        does not burn its jti)."""
        bad = AuthCode.TOKEN_BAD_CLAIMS
        sub, jti = claims["sub"], claims["jti"]
        # The account id reaches logs, the admin API and the journal: printable text only (no
        # control or bidirectional-override characters, no NUL).
        if not 1 <= len(sub) <= MAX_ACCOUNT_LEN or not sub.isprintable():
            raise AuthError(bad, "sub")
        if not 1 <= len(jti) <= MAX_JTI_LEN:
            raise AuthError(bad, "jti")
        role = claims.get("role", "player")
        if role not in ROLES:
            raise AuthError(bad, "role")
        name = claims.get("name")
        if name is not None and not _valid_name(name):
            raise AuthError(bad, "name")
        iat, exp = int(claims["iat"]), int(claims["exp"])
        nbf = int(claims.get("nbf", iat))
        if exp <= iat or exp - iat > self.max_lifetime:
            raise AuthError(bad, f"lifetime {exp - iat}s outside 1..{self.max_lifetime}")
        now = self.clock()
        if consume and not self.replay.check_and_add(jti, exp + self.leeway, now):
            raise AuthError(AuthCode.TOKEN_REPLAYED, f"jti {jti} for {sub!r}")
        return TokenClaims(account=sub, name=name, campaign=self.campaign, role=role, iat=iat, nbf=nbf, exp=exp,
                           jti=jti)  # fmt: skip


# -- HTTP bearer ------------------------------------------------------------------------------------
def bearer_claims(header_value: str | None, verifier: TokenVerifier, role: Role | str = "admin") -> TokenClaims:
    """Claims from an `Authorization: Bearer <token>` header that carries `role`.

    AuthError.http_status: 401 when the header is missing, not Bearer, or the token is invalid
    (answer with `WWW-Authenticate: Bearer`); 403 when the token is valid but lacks the role.
    Bearer tokens are not consumed by the replay cache (they are presented on every request).
    """
    if not header_value:
        raise AuthError(AuthCode.TOKEN_MISSING, "no Authorization header")
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(AuthCode.TOKEN_MISSING, "not a Bearer authorization")
    claims = verifier.verify(token.strip(), consume=False)
    if claims.role != role:
        raise AuthError(AuthCode.FORBIDDEN, f"{claims.account!r} has role {claims.role}, route needs {role}")
    return claims


# -- account service --------------------------------------------------------------------------------
@runtime_checkable
class AccountService(Protocol):
    """What plugs in on the issuing side (registration, login, refresh come in a later issue).

    An account service authenticates a person by its own means (password, OAuth, platform ticket),
    then hands the client a fresh, short-lived join token for one campaign, signed with a key of the
    campaign servers' key ring. The engine never calls it: the engine only verifies. A client asks
    for a new token for every connection (tokens are single-use), including reconnects.
    """

    def join_token(self, account: str, campaign: str) -> str:
        """A fresh join token for an already authenticated account."""
        ...


class LocalAccountService:
    """An AccountService that trusts its caller: for the demo, bots, tests and operators."""

    def __init__(
        self,
        issuer: TokenIssuer,
        *,
        role: Role = "player",
        ttl: int = 300,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.issuer = issuer
        self.role: Role = role
        self.ttl = ttl
        self.names = dict(names or {})

    def join_token(self, account: str, campaign: str) -> str:
        return self.issuer.issue(account, campaign, role=self.role, ttl=self.ttl, name=self.names.get(account))
