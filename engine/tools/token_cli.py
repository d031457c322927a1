"""`arbiter token`: issue a join token with the configured keys (for operators and tests).

    ARBITER_JWT_SECRET=... arbiter token --account alice --campaign demo [--role admin] [--ttl 600]

Prints the token alone on stdout (or a JSON object with --json). Exit 2 when no key is configured
or the arguments are refused. Until engine/cli.py wires it in, `python -m engine.tools.token_cli token ...`
runs the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from engine.security.auth import (
    DEFAULT_TTL,
    ENV_KEYFILE,
    ENV_KEYS,
    ENV_SECRET,
    ROLES,
    KeyConfigError,
    KeyRing,
    TokenIssuer,
)


def add_token_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `token` subcommand to an argparse subparsers object (from `add_subparsers`)."""
    t: argparse.ArgumentParser = subparsers.add_parser(
        "token",
        help="issue a signed join token",
        description=f"Issue a signed join token with the key from {ENV_SECRET}, {ENV_KEYS} or {ENV_KEYFILE}.",
    )
    t.add_argument("--account", required=True, help="account id (the token's sub)")
    t.add_argument("--campaign", required=True, help="campaign id (the token's aud)")
    t.add_argument("--role", default="player", choices=ROLES)
    t.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="lifetime in seconds (default %(default)s)")
    t.add_argument("--name", default=None, help="display name pinned in the token (1..32 printable chars)")
    t.add_argument("--json", action="store_true", help="print {token, kid, jti, exp} as JSON")
    t.set_defaults(func=cmd_token)
    return t


def cmd_token(args: argparse.Namespace) -> int:
    try:
        ring = KeyRing.from_env()
    except KeyConfigError as e:
        print(f"arbiter token: {e}", file=sys.stderr)
        return 2
    try:
        token = TokenIssuer(ring).issue(args.account, args.campaign, role=args.role, ttl=args.ttl, name=args.name)
    except ValueError as e:
        print(f"arbiter token: {e}", file=sys.stderr)
        return 2
    if args.json:
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
        out = {"token": token, "kid": ring.active_kid, "jti": claims["jti"], "exp": claims["exp"]}
        print(json.dumps(out), flush=True)
    else:
        print(token, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="arbiter")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_token_parser(sub)
    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
