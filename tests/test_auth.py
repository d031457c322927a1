"""Join tokens: issue/verify, every refusal class with its code, rotation, replay cache, bearer, CLI."""

from __future__ import annotations

import base64
import hmac
import json
import os
import subprocess
import sys
from datetime import datetime, tzinfo
from pathlib import Path

import jwt
import pytest

from engine.security.auth import (
    MAX_TTL,
    AccountService,
    AuthCode,
    AuthError,
    KeyConfigError,
    KeyRing,
    LocalAccountService,
    NoKeyConfigured,
    ReplayCache,
    TokenClaims,
    TokenIssuer,
    TokenVerifier,
    bearer_claims,
    secret_equals,
)
from engine.security.auth import (
    PUBLIC_MESSAGES as PUBLIC,
)
from netcode.protocol import MAX_TOKEN_BYTES, ErrorCode

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 32
OTHER = "o" * 32
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.single(SECRET)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The verifier's time: PyJWT reads the wall clock for iat/nbf/exp, so its `datetime` is pinned
    to this clock (the replay cache reads it through the verifier's `clock`)."""
    c = Clock()

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> PinnedDatetime:  # type: ignore[override, unused-ignore]
            return cls.fromtimestamp(c.t, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", PinnedDatetime)
    return c


@pytest.fixture
def verifier(ring: KeyRing, clock: Clock) -> TokenVerifier:
    return TokenVerifier(ring, "c1", clock=clock)


def issue(ring: KeyRing, **kw: object) -> str:
    args: dict[str, object] = {"account": "alice", "campaign": "c1", "now": T0}
    args.update(kw)
    return TokenIssuer(ring).issue(**args)  # type: ignore[arg-type]


def b64(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(
    header: dict[str, object], payload: dict[str, object], key: bytes | None = None, digest: str = "sha256"
) -> str:
    signing_input = f"{b64(header)}.{b64(payload)}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(sig) if sig else ''}"


def good_payload(**kw: object) -> dict[str, object]:
    p: dict[str, object] = {
        "sub": "alice",
        "aud": "c1",
        "role": "player",
        "iat": int(T0),
        "nbf": int(T0),
        "exp": int(T0) + 600,
        "jti": "ab" * 16,
    }
    p.update(kw)
    return p


def code_of(verifier: TokenVerifier, token: str | None) -> AuthCode:
    with pytest.raises(AuthError) as ei:
        verifier.verify(token)
    return ei.value.code


# -- round trip -------------------------------------------------------------------------------------
def test_issue_verify_round_trip(ring: KeyRing, verifier: TokenVerifier) -> None:
    token = issue(ring, name="Alice", role="admin", ttl=120)
    claims = verifier.verify(token)
    assert isinstance(claims, TokenClaims)
    assert claims.account == "alice"
    assert claims.name == "Alice"
    assert claims.campaign == "c1"
    assert claims.role == "admin" and claims.is_admin
    assert claims.iat == claims.nbf == int(T0)
    assert claims.exp == int(T0) + 120
    assert len(claims.jti) == 32 and int(claims.jti, 16) >= 0
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "default", "typ": "JWT"}
    with pytest.raises(AttributeError):
        claims.role = "player"  # type: ignore[misc]


def test_name_optional_and_jti_unique(ring: KeyRing, verifier: TokenVerifier) -> None:
    a, b = issue(ring), issue(ring)
    ca, cb = verifier.verify(a), verifier.verify(b)
    assert ca.name is None and ca.role == "player"
    assert ca.jti != cb.jti


def test_codes_continue_protocol_numbering() -> None:
    # The protocol's codes are 1-9 and 20+ (fair play); the token codes fill 10-18 without overlap.
    protocol = {int(c) for c in ErrorCode}
    assert max(c for c in protocol if c < 10) + 1 == min(AuthCode) == 10
    assert [int(c) for c in AuthCode][:8] == list(range(10, 18))
    assert not protocol & {int(c) for c in AuthCode}


def test_signature_compared_in_constant_time(
    ring: KeyRing, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verifier.verify(issue(ring))
    assert calls
    assert secret_equals("abc", "abc") and not secret_equals(b"abc", b"abd")


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, ""])
def test_missing(verifier: TokenVerifier, token: str | None) -> None:
    assert code_of(verifier, token) is AuthCode.TOKEN_MISSING


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c.d",
        "..",
        "not base64!.eyJ9.sig",
        "€.€.€",
        b64({"alg": "HS256"})[:-3] + ".e30.sig",  # header not JSON
        b64([1, 2]) + ".e30.sig",  # header not an object
        "x" * (MAX_TOKEN_BYTES + 1),
        "a." * 3000 + "b",
    ],
)
def test_malformed(verifier: TokenVerifier, token: str) -> None:
    assert code_of(verifier, token) is AuthCode.TOKEN_MALFORMED


def test_malformed_payload_after_valid_signature(verifier: TokenVerifier) -> None:
    header = b64({"alg": "HS256", "kid": "default"})
    nan_exp = json.dumps(good_payload(exp=float("nan"))).encode()  # "NaN" is no NumericDate
    for body in (b"not json", b"[1,2]", nan_exp):
        signing_input = f"{header}.{b64(body)}"
        sig = hmac.new(SECRET.encode(), signing_input.encode(), "sha256").digest()
        assert code_of(verifier, f"{signing_input}.{b64(sig)}") is AuthCode.TOKEN_MALFORMED


def test_unencoded_payload_header_refused(verifier: TokenVerifier) -> None:
    tok = forge({"alg": "HS256", "kid": "default", "b64": False, "crit": ["b64"]}, good_payload(), SECRET.encode())
    assert code_of(verifier, tok) is AuthCode.TOKEN_MALFORMED


def test_bad_signature_other_secret(verifier: TokenVerifier) -> None:
    other = KeyRing.single(OTHER)  # same kid "default", different secret
    assert code_of(verifier, issue(other)) is AuthCode.TOKEN_BAD_SIGNATURE


def test_bad_signature_tampered_payload(ring: KeyRing, verifier: TokenVerifier) -> None:
    h, _, s = issue(ring).split(".")
    tampered = f"{h}.{b64(good_payload(role='admin'))}.{s}"
    assert code_of(verifier, tampered) is AuthCode.TOKEN_BAD_SIGNATURE


def test_unknown_or_missing_kid(verifier: TokenVerifier) -> None:
    assert code_of(verifier, issue(KeyRing.single(SECRET, kid="k9"))) is AuthCode.TOKEN_BAD_SIGNATURE
    no_kid = jwt.encode(good_payload(), SECRET, algorithm="HS256")
    assert code_of(verifier, no_kid) is AuthCode.TOKEN_BAD_SIGNATURE


@pytest.mark.parametrize(
    ("alg", "digest"),
    [("none", None), ("None", None), ("HS512", "sha512"), ("HS384", "sha384"), ("RS256", "sha256")],
)
def test_forged_alg(verifier: TokenVerifier, alg: str, digest: str | None) -> None:
    # Signed (where there is a signature at all) with the right secret: only the alg is wrong.
    key = SECRET.encode() if digest else None
    tok = forge({"alg": alg, "kid": "default", "typ": "JWT"}, good_payload(), key, digest or "sha256")
    assert code_of(verifier, tok) is AuthCode.TOKEN_BAD_SIGNATURE


def test_expired(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    tok = issue(ring, ttl=60)
    clock.t = T0 + 60 + 4  # inside the 5 s leeway: still good
    verifier.verify(tok)
    tok2 = issue(ring, ttl=60)
    clock.t = T0 + 60 + 5
    assert code_of(verifier, tok2) is AuthCode.TOKEN_EXPIRED


def test_not_yet_valid(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    assert code_of(verifier, issue(ring, now=T0 + 30)) is AuthCode.TOKEN_NOT_YET_VALID
    nbf_future = forge({"alg": "HS256", "kid": "default"}, good_payload(nbf=int(T0) + 30), SECRET.encode())
    assert code_of(verifier, nbf_future) is AuthCode.TOKEN_NOT_YET_VALID
    clock.t = T0 + 26  # within leeway
    verifier.verify(nbf_future)


def test_wrong_campaign(ring: KeyRing, verifier: TokenVerifier) -> None:
    with pytest.raises(AuthError) as ei:
        verifier.verify(issue(ring, campaign="c2"))
    err = ei.value
    assert err.code is AuthCode.TOKEN_WRONG_CAMPAIGN
    # Nothing beyond the code: neither this campaign nor the token's.
    assert "c1" not in str(err) and "c2" not in str(err) and "c1" not in err.public_message
    assert err.http_status == 401


def test_audience_list(verifier: TokenVerifier) -> None:
    ok = forge({"alg": "HS256", "kid": "default"}, good_payload(aud=["c0", "c1"]), SECRET.encode())
    assert verifier.verify(ok).campaign == "c1"


def test_replayed(ring: KeyRing, verifier: TokenVerifier) -> None:
    tok = issue(ring)
    verifier.verify(tok)
    assert code_of(verifier, tok) is AuthCode.TOKEN_REPLAYED


def test_refused_token_does_not_burn_jti(ring: KeyRing, clock: Clock) -> None:
    v1 = TokenVerifier(ring, "c1", clock=clock)
    v2 = TokenVerifier(ring, "c2", clock=clock, replay=v1.replay)
    tok = issue(ring)
    assert code_of(v2, tok) is AuthCode.TOKEN_WRONG_CAMPAIGN
    v1.verify(tok)


@pytest.mark.parametrize("claim", ["sub", "aud", "iat", "exp", "jti"])
def test_missing_claim(verifier: TokenVerifier, claim: str) -> None:
    p = good_payload()
    del p[claim]
    tok = forge({"alg": "HS256", "kid": "default"}, p, SECRET.encode())
    assert code_of(verifier, tok) is AuthCode.TOKEN_BAD_CLAIMS


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": ""},
        {"sub": 42},
        {"sub": "evil\u202eadmin"},  # a bidirectional override would corrupt what an admin reads
        {"sub": "a\x00{}"},
        {"jti": 7},
        {"role": "god"},
        {"name": "x" * 33},
        {"name": "a\nb"},
        {"iat": None},
        {"exp": int(T0) + MAX_TTL + 1},  # lifetime too long
    ],
)
def test_bad_claims(verifier: TokenVerifier, bad: dict[str, object]) -> None:
    tok = forge({"alg": "HS256", "kid": "default"}, good_payload(**bad), SECRET.encode())
    assert code_of(verifier, tok) is AuthCode.TOKEN_BAD_CLAIMS


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ({"aud": 3}, AuthCode.TOKEN_WRONG_CAMPAIGN),  # PyJWT: not an audience this campaign accepts
        ({"aud": []}, AuthCode.TOKEN_BAD_CLAIMS),  # an empty audience is a missing one
        ({"exp": "soon"}, AuthCode.TOKEN_MALFORMED),  # PyJWT: exp must be a NumericDate
        ({"exp": True}, AuthCode.TOKEN_EXPIRED),  # a bool is the int 1 to PyJWT: long expired
        ({"exp": int(T0) - 1}, AuthCode.TOKEN_BAD_CLAIMS),  # before iat, inside the leeway: the lifetime rule
    ],
)
def test_ill_typed_claims_as_pyjwt_classifies_them(verifier: TokenVerifier, bad: dict[str, object],
                                                   code: AuthCode) -> None:  # fmt: skip
    tok = forge({"alg": "HS256", "kid": "default"}, good_payload(**bad), SECRET.encode())
    assert code_of(verifier, tok) is code


def test_public_messages_leak_nothing(ring: KeyRing, verifier: TokenVerifier) -> None:
    tokens = [issue(KeyRing.single(OTHER, kid="secretkid")), issue(ring, campaign="zzz"), "garbage"]
    for tok in tokens:
        with pytest.raises(AuthError) as ei:
            verifier.verify(tok)
        msg = str(ei.value)
        assert msg == ei.value.public_message
        for s in ("secretkid", "zzz", "c1", "alice", SECRET):
            assert s not in msg


# -- rotation ---------------------------------------------------------------------------------------
def test_rotation(clock: Clock) -> None:
    ring = KeyRing({"k1": SECRET}, "k1")
    verifier = TokenVerifier(ring, "c1", clock=clock)
    old = issue(ring)
    old2 = issue(ring)
    ring.add("k2", OTHER, activate=True)
    new = issue(ring)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    assert jwt.get_unverified_header(old)["kid"] == "k1"
    verifier.verify(old)  # signed by a non-active key: still good
    verifier.verify(new)
    ring.remove("k1")
    assert code_of(verifier, old2) is AuthCode.TOKEN_BAD_SIGNATURE
    with pytest.raises(KeyConfigError):
        ring.remove("k2")  # the active key


def test_keys_env_rotation(clock: Clock) -> None:
    before = KeyRing.from_env({"ARBITER_JWT_KEYS": f"k1:{SECRET}"})
    tok = issue(before)
    after = KeyRing.from_env({"ARBITER_JWT_KEYS": f"k2:{OTHER},k1:{SECRET}"})
    assert after.active_kid == "k2"
    v = TokenVerifier(after, "c1", clock=clock)
    v.verify(tok)
    assert jwt.get_unverified_header(issue(after))["kid"] == "k2"


# -- key configuration ------------------------------------------------------------------------------
def test_from_env_variants(tmp_path: Path) -> None:
    r = KeyRing.from_env({"ARBITER_JWT_SECRET": SECRET})
    assert r.active_kid == "default" and r.kids == ("default",)
    kf = tmp_path / "keys.json"
    kf.write_text(json.dumps({"active": "b", "keys": {"a": SECRET, "b": OTHER}}))
    kf.chmod(0o600)
    r = KeyRing.from_env({"ARBITER_JWT_KEYFILE": str(kf)})
    assert r.active_kid == "b" and set(r.kids) == {"a", "b"}
    with pytest.raises(NoKeyConfigured):
        KeyRing.from_env({})
    assert KeyRing.from_optional_env({}) is None
    with pytest.raises(KeyConfigError):
        KeyRing.from_env({"ARBITER_JWT_SECRET": SECRET, "ARBITER_JWT_KEYS": f"a:{SECRET}"})


@pytest.mark.parametrize(
    "env",
    [
        {"ARBITER_JWT_SECRET": "short"},
        {"ARBITER_JWT_SECRET": "x" * 31},
        {"ARBITER_JWT_KEYS": f"a:{SECRET},b:short"},
        {"ARBITER_JWT_KEYS": "nocolon"},
        {"ARBITER_JWT_KEYS": f"bad kid:{SECRET}"},
        {"ARBITER_JWT_KEYS": f"a:{SECRET},a:{OTHER}"},
        {"ARBITER_JWT_KEYFILE": "/nonexistent/keys.json"},
    ],
)
def test_bad_key_config(env: dict[str, str]) -> None:
    with pytest.raises(KeyConfigError):
        KeyRing.from_env(env)


def test_keyfile_bad_shapes(tmp_path: Path) -> None:
    for content in ("not json", "[]", '{"keys": {}}', json.dumps({"active": "x", "keys": {"a": SECRET}})):
        kf = tmp_path / "k.json"
        kf.write_text(content)
        with pytest.raises(KeyConfigError):
            KeyRing.from_file(kf)


def test_generate_and_to_env(clock: Clock) -> None:
    ring = KeyRing.generate()
    assert SECRET not in repr(ring) and "ephemeral" in repr(ring)
    env = ring.to_env()
    again = KeyRing.from_env(env)
    tok = TokenIssuer(ring).issue("bot-1", "c1", now=T0)
    TokenVerifier(again, "c1", clock=clock).verify(tok)
    assert KeyRing.generate().signing_key()[1] != ring.signing_key()[1]


def test_issuer_refuses_bad_arguments(ring: KeyRing) -> None:
    iss = TokenIssuer(ring)
    for kw in (
        {"account": ""},
        {"campaign": ""},
        {"role": "root"},
        {"ttl": 0},
        {"ttl": MAX_TTL + 1},
        {"ttl": True},
        {"name": ""},
        {"name": "n" * 33},
        {"account": "a" * 5000},
    ):
        args: dict[str, object] = {"account": "alice", "campaign": "c1"}
        args.update(kw)
        with pytest.raises(ValueError):
            iss.issue(**args)  # type: ignore[arg-type]


def test_token_fits_hello(ring: KeyRing) -> None:
    tok = issue(ring, account="a" * 256, name="n" * 32, campaign="c" * 200)
    assert len(tok) <= MAX_TOKEN_BYTES


# -- replay cache -----------------------------------------------------------------------------------
def test_replay_entry_expires_with_token(ring: KeyRing, clock: Clock) -> None:
    v = TokenVerifier(ring, "c1", clock=clock, leeway=5)
    tok = issue(ring, ttl=60)
    v.verify(tok)
    assert len(v.replay) == 1
    clock.t = T0 + 64  # still verifiable: still remembered
    assert code_of(v, tok) is AuthCode.TOKEN_REPLAYED
    clock.t = T0 + 66  # past exp + leeway: expired, and forgotten on the next check
    assert code_of(v, tok) is AuthCode.TOKEN_EXPIRED
    v.verify(issue(ring, now=clock.t))
    assert len(v.replay) == 1


def test_replay_cache_bounded_evicts_soonest_expiring() -> None:
    c = ReplayCache(capacity=3)
    assert c.check_and_add("a", 100, 0)
    assert c.check_and_add("b", 300, 0)
    assert c.check_and_add("c", 200, 0)
    assert c.check_and_add("d", 400, 0)  # full: "a" (soonest) goes
    assert len(c) == 3 and "a" not in c and c.evictions == 1
    assert not c.check_and_add("b", 300, 1)
    assert c.check_and_add("e", 500, 0)  # "c" goes next
    assert "c" not in c and c.evictions == 2
    assert c.check_and_add("x", 1000, 350)  # at t=350 "b" (300) has expired: purged, not evicted
    assert sorted(j for j, _ in c.export()) == ["d", "e", "x"] and c.evictions == 2


def test_replay_cache_purges_on_time() -> None:
    c = ReplayCache(capacity=10)
    for i in range(10):
        assert c.check_and_add(f"j{i}", 10 + i, 0)
    assert c.check_and_add("late", 100, 15)  # j0..j5 expired
    assert len(c) == 5 and c.evictions == 0
    assert c.check_and_add("j0", 50, 15)  # forgotten ids are new again (their token has expired)


def test_replay_cache_bounded_in_verifier(ring: KeyRing, clock: Clock) -> None:
    v = TokenVerifier(ring, "c1", clock=clock, replay=ReplayCache(capacity=50))
    for _ in range(200):
        v.verify(issue(ring))
    assert len(v.replay) == 50 and v.replay.evictions == 150


def test_replay_export_import(ring: KeyRing, clock: Clock) -> None:
    v = TokenVerifier(ring, "c1", clock=clock)
    toks = [issue(ring, ttl=10), issue(ring, ttl=100)]
    for t in toks:
        v.verify(t)
    saved = v.replay.export(clock.t)
    assert [u for _, u in saved] == [T0 + 15, T0 + 105]
    json.dumps(saved)  # persistable as is
    # "Restart" 20 s later: the short token's entry is gone, the long one still refused.
    clock.t = T0 + 20
    fresh = TokenVerifier(ring, "c1", clock=clock)
    assert fresh.replay.import_(saved, clock.t) == 1
    assert code_of(fresh, toks[1]) is AuthCode.TOKEN_REPLAYED
    # Without import, a restart forgets: documented limitation.
    assert TokenVerifier(ring, "c1", clock=clock).verify(toks[1]).jti


# -- bearer -----------------------------------------------------------------------------------------
def test_bearer(ring: KeyRing, verifier: TokenVerifier) -> None:
    admin = issue(ring, role="admin")
    for _ in range(3):  # presented on every request: not consumed
        assert bearer_claims(f"Bearer {admin}", verifier).role == "admin"
    assert bearer_claims(f"bearer  {admin}", verifier).account == "alice"
    for header in (None, "", "Basic abc", "Bearer", "Bearer garbage", f"Bearer {issue(KeyRing.single(OTHER))}"):
        with pytest.raises(AuthError) as ei:
            bearer_claims(header, verifier)
        assert ei.value.http_status == 401
    with pytest.raises(AuthError) as ei:
        bearer_claims(f"Bearer {issue(ring)}", verifier)
    assert ei.value.http_status == 403 and ei.value.code is AuthCode.FORBIDDEN
    assert bearer_claims(f"Bearer {issue(ring)}", verifier, role="player").role == "player"


# -- account service --------------------------------------------------------------------------------
def test_local_account_service(ring: KeyRing, verifier: TokenVerifier, clock: Clock) -> None:
    svc = LocalAccountService(TokenIssuer(ring), names={"alice": "Alice"})
    assert isinstance(svc, AccountService)
    # A reconnect fetches a fresh token: both verify, the old one never twice.
    t1, t2 = svc.join_token("alice", "c1"), svc.join_token("alice", "c1")
    clock.t = __import__("time").time()  # the service mints tokens for now
    assert verifier.verify(t1).name == "Alice"
    assert verifier.verify(t2).account == "alice"
    assert code_of(verifier, t1) is AuthCode.TOKEN_REPLAYED


# -- CLI --------------------------------------------------------------------------------------------
def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_JWT_")}
    return subprocess.run(
        [sys.executable, "-m", "engine.tools.token_cli", "token", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_token_that_verifies() -> None:
    secret = "cli-secret-" + "z" * 32
    r = _run_cli(
        ["--account", "op", "--campaign", "c9", "--role", "admin", "--ttl", "120", "--name", "Op"],
        {"ARBITER_JWT_SECRET": secret},
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert "\n" not in token
    claims = TokenVerifier(KeyRing.single(secret), "c9").verify(token)
    assert (claims.account, claims.role, claims.name, claims.exp - claims.iat) == ("op", "admin", "Op", 120)


def test_cli_json() -> None:
    r = _run_cli(["--account", "op", "--campaign", "c9", "--json"], {"ARBITER_JWT_KEYS": f"k7:{SECRET}"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kid"] == "k7" and len(out["jti"]) == 32
    TokenVerifier(KeyRing({"k7": SECRET}, "k7"), "c9").verify(out["token"])


def test_cli_without_key_exits_2() -> None:
    r = _run_cli(["--account", "op", "--campaign", "c9"], {})
    assert r.returncode == 2
    assert r.stdout == ""
    assert "ARBITER_JWT_SECRET" in r.stderr


def test_cli_short_secret_and_bad_ttl_exit_2() -> None:
    assert _run_cli(["--account", "op", "--campaign", "c9"], {"ARBITER_JWT_SECRET": "short"}).returncode == 2
    r = _run_cli(["--account", "op", "--campaign", "c9", "--ttl", "0"], {"ARBITER_JWT_SECRET": SECRET})
    assert r.returncode == 2 and "ttl" in r.stderr


# -- the hello, sans I/O (how engine/server.py's _hello uses it) ------------------------------------
def test_hello_refusal_through_session(ring: KeyRing, verifier: TokenVerifier) -> None:
    import msgpack

    from engine.security.auth import AUTH_CLOSE_CODE
    from netcode.protocol import encode_hello
    from netcode.session import HelloEvent, ServerSession

    for token, expect in ((issue(ring, campaign="other"), AuthCode.TOKEN_WRONG_CAMPAIGN), ("", AuthCode.TOKEN_MISSING)):
        session = ServerSession()
        (ev,) = session.receive(encode_hello("bob", token), 0.0)
        assert isinstance(ev, HelloEvent)
        with pytest.raises(AuthError) as ei:
            verifier.verify(ev.token)
        session.reject(ei.value.code, ei.value.public_message, AUTH_CLOSE_CODE)
        err, bye = (msgpack.unpackb(f) for f in session.data_to_send())
        assert err == {"t": "err", "code": int(expect), "msg": PUBLIC[expect]}
        assert bye["t"] == "bye"
        assert session.close_code == 4006
    session = ServerSession()
    (ev,) = session.receive(encode_hello("bob", issue(ring)), 0.0)
    assert isinstance(ev, HelloEvent)
    assert verifier.verify(ev.token).account == "alice"
