"""`/v1/auth/...` and `/v1/me...`: registration, login, guests, refresh, logout, profile, password.

No answer says whether an account exists: an unknown login and a wrong password get the same 401
after the same argon2 work, and the per-account backoff is keyed by the login name either way.
Registration is the one place that must refuse a taken email or handle; it says "email or handle
not available" (never which) and is rate-limited per address like the login.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from hub import validate as v
from hub.http import body, client_ip, no_query, ok, principal, refuse, user_agent
from hub.sessions import Principal, device_digest, new_id, new_refresh_token, refresh_digest
from hub.state import HUB_KEY, Hub
from persistence.pg_hub_accounts import Account, Conflict, Rotation
from persistence.redis_layout import subject_hash

routes = web.RouteTableDef()

_REFRESH = v.pattern(v.re.compile(r"rt_[A-Za-z0-9_-]{43}"), "a refresh token")
_GUEST_PREFIX = "guest_"


def _new_handle(name: str, value: Any) -> str:
    handle = v.handle(name, value)
    if handle.lower().startswith(_GUEST_PREFIX):
        v.fail(name, f"handles starting with {_GUEST_PREFIX!r} are kept for guests")
    return handle


async def _session(hub: Hub, request: web.Request, account: Account, status: int = 200) -> web.Response:
    """A new session family: an access token and its first refresh token."""
    family = new_id("s")
    token, digest = new_refresh_token()
    cfg = hub.cfg
    await hub.accounts.new_session(account.account_id, family, digest, family_ttl_s=cfg.refresh_ttl_s,
                                   token_ttl_s=cfg.refresh_ttl_s, user_agent=user_agent(request),
                                   ip=client_ip(request))  # fmt: skip
    return ok(_tokens(hub, account, family, token), status)


def _tokens(hub: Hub, account: Account, family: str, refresh: str) -> dict[str, Any]:
    access = hub.access.issue(account.account_id, family, account.role, account.display_name or account.handle)
    return {
        "account": _private(account),
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": hub.cfg.access_ttl_s,
        "refresh_token": refresh,
        "refresh_expires_in": hub.cfg.refresh_ttl_s,
    }


def _private(a: Account) -> dict[str, Any]:
    return {"account_id": a.account_id, "handle": a.handle, "email": a.email, "display_name": a.display_name,
            "guest": a.is_guest, "role": a.role, "created_at": a.created_at, "muted_until": a.muted_until}  # fmt: skip


async def _revoke(hub: Hub, sessions: list[str]) -> None:
    if sessions:
        hub.revoked.add(sessions)
        hub.streams.close_sessions(sessions)
        await hub.publish({"t": "revoke", "sessions": sessions})


@routes.post("/v1/auth/register")
async def register(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    b = await body(
        request,
        {"email": v.email, "handle": _new_handle, "password": v.password, "display_name": v.display_name},
        ("email", "handle", "password"),
    )
    verdict = await hub.limits.register_ip.hit(client_ip(request))
    if not verdict.allowed:
        refuse(429, "too many registrations from this address; try later", retry_after=verdict.retry_after_s)
    account_id = new_id("a")
    try:
        await hub.accounts.create(account_id, handle=b["handle"], email=b["email"],
                                  display_name=b.get("display_name") or b["handle"],
                                  password_hash=await hub.passwords.hash(b["password"]))  # fmt: skip
    except Conflict:
        refuse(409, "email or handle not available")
    account = await hub.accounts.get(account_id)
    assert account is not None
    return await _session(hub, request, account, 201)


@routes.post("/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    b = await body(request, {"login": v.login_name, "password": v.password}, ("login", "password"))
    ip = client_ip(request)
    # Redis down: these raise and the request gets a 503 (fail closed), never an unlimited login.
    # Attempts are counted as they start, not when they fail: a burst of concurrent guesses must not
    # all pass the checks before the first failure is booked.
    verdict = await hub.limits.login_ip.hit(ip)
    if not verdict.allowed:
        hub.metrics.logins.labels("ip_limited").inc()
        refuse(429, "too many failed logins from this address; try later", retry_after=verdict.retry_after_s)
    subject = subject_hash(b["login"].lower())
    wait = await hub.limits.login_account.begin(subject)
    if wait > 0:
        await hub.limits.login_ip.undo(ip)  # not a guess: the account's own limit refused it
        hub.metrics.logins.labels("backoff").inc()
        refuse(429, "too many failed logins for this account, or one in progress; try later", retry_after=wait)
    try:
        account = await hub.accounts.by_login(b["login"])
        matched, rehash = await hub.passwords.verify(account.password_hash if account else None, b["password"])
        if not matched or account is None:
            await hub.limits.login_account.failed(subject)
            hub.metrics.logins.labels("failed").inc()
            refuse(401, "invalid login or password")
    finally:
        await hub.limits.login_account.end(subject)
    await hub.limits.login_ip.undo(ip)  # the limit counts failures
    await hub.limits.login_account.clear(subject)
    if rehash:
        await hub.accounts.set_password(account.account_id, rehash)
    hub.metrics.logins.labels("ok").inc()
    return await _session(hub, request, account)


@routes.post("/v1/auth/guest")
async def guest(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    b = await body(request, {"device_id": v.device_id, "display_name": v.display_name}, ("device_id",))
    digest = device_digest(b["device_id"])
    account = await hub.accounts.by_device(digest)
    status = 200
    if account is None:
        verdict = await hub.limits.register_ip.hit(client_ip(request))
        if not verdict.allowed:
            refuse(429, "too many new accounts from this address; try later", retry_after=verdict.retry_after_s)
        account_id = new_id("a")
        handle = _GUEST_PREFIX + account_id[2:14]
        with contextlib.suppress(Conflict):  # the same device raced itself: the other request made the account
            await hub.accounts.create(account_id, handle=handle, display_name=b.get("display_name") or handle,
                                      device_hash=digest, is_guest=True)  # fmt: skip
        account = await hub.accounts.by_device(digest)
        if account is None:
            refuse(409, "this device id cannot be used")
        status = 201
    return await _session(hub, request, account, status)


@routes.post("/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    b = await body(request, {"refresh_token": _REFRESH}, ("refresh_token",))
    token, digest = new_refresh_token()
    result = await hub.accounts.rotate(refresh_digest(b["refresh_token"]), digest, hub.cfg.refresh_ttl_s)
    hub.metrics.refreshes.labels(result.outcome.value).inc()
    if result.outcome is Rotation.REUSED:
        await _revoke(hub, [result.family_id])
        refuse(401, "refresh token already used: the session is revoked, log in again")
    if result.outcome is not Rotation.OK:
        refuse(401, "refresh token invalid or expired")
    account = await hub.accounts.get(result.account_id)
    if account is None:
        refuse(401, "refresh token invalid or expired")
    return ok(_tokens(hub, account, result.family_id, token))


@routes.post("/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    await body(request, {})
    await hub.accounts.revoke_family(who.session, "logout", who.account)
    await _revoke(hub, [who.session])
    return web.Response(status=204)


@routes.post("/v1/auth/logout-all")
async def logout_all(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    await body(request, {})
    await _revoke(hub, await hub.accounts.revoke_account(who.account, "logout everywhere"))
    return web.Response(status=204)


async def _me(hub: Hub, who: Principal) -> Account:
    account = await hub.accounts.get(who.account)
    if account is None:
        refuse(401, "account gone")
    return account


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    account = await _me(hub, principal(request))
    out = _private(account)
    out["history"] = await hub.campaigns.history(account.account_id, public_only=False)
    return ok(out)


@routes.patch("/v1/me")
async def update_me(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, {"display_name": v.display_name}, ("display_name",))
    await hub.accounts.set_display_name(who.account, b["display_name"])
    return ok(_private(await _me(hub, who)))


@routes.get("/v1/me/sessions")
async def sessions(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    rows = await hub.accounts.sessions(who.account)
    for r in rows:
        r["current"] = r["family_id"] == who.session
    return ok({"sessions": rows})


@routes.post("/v1/me/upgrade")
async def upgrade(request: web.Request) -> web.Response:
    """A guest keeps its account id (and so its progress) and gains an email and a password."""
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, {"email": v.email, "handle": _new_handle, "password": v.password},
                   ("email", "handle", "password"))  # fmt: skip
    account = await _me(hub, who)
    if not account.is_guest:
        refuse(409, "this account is not a guest account")
    try:
        done = await hub.accounts.upgrade(who.account, handle=b["handle"], email=b["email"],
                                          password_hash=await hub.passwords.hash(b["password"]))  # fmt: skip
    except Conflict:
        refuse(409, "email or handle not available")
    if not done:
        refuse(409, "this account is not a guest account")
    return ok(_private(await _me(hub, who)))


@routes.post("/v1/me/password")
async def change_password(request: web.Request) -> web.Response:
    """Change the password; every other session of the account is revoked, this one stays."""
    hub = request.app[HUB_KEY]
    no_query(request)
    who = principal(request)
    b = await body(request, {"old_password": v.password, "new_password": v.password},
                   ("old_password", "new_password"))  # fmt: skip
    subject = subject_hash(who.account)
    wait = await hub.limits.login_account.begin(subject)
    if wait > 0:
        refuse(429, "too many wrong passwords, or a check in progress; try later", retry_after=wait)
    try:
        account = await _me(hub, who)
        if account.password_hash is None:
            refuse(409, "this account has no password yet; upgrade it first")
        matched, _ = await hub.passwords.verify(account.password_hash, b["old_password"])
        if not matched:
            await hub.limits.login_account.failed(subject)
            refuse(403, "the old password is wrong")
    finally:
        await hub.limits.login_account.end(subject)
    await hub.limits.login_account.clear(subject)
    await hub.accounts.set_password(who.account, await hub.passwords.hash(b["new_password"]))
    await _revoke(hub, await hub.accounts.revoke_account(who.account, "password changed", keep=who.session))
    return web.Response(status=204)


@routes.get("/v1/players/{handle}")
async def player(request: web.Request) -> web.Response:
    """A public profile: handle, display name, public game history. No email, no private campaign."""
    hub = request.app[HUB_KEY]
    no_query(request)
    principal(request)
    handle = v.handle("handle", request.match_info["handle"])
    account = await hub.accounts.by_handle(handle)
    if account is None:
        refuse(404, "no such player")
    return ok({
        "account_id": account.account_id, "handle": account.handle, "display_name": account.display_name,
        "guest": account.is_guest, "created_at": account.created_at,
        "history": await hub.campaigns.history(account.account_id, public_only=True),
    })  # fmt: skip
