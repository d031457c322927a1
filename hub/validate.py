"""Strict input: JSON bodies and query values are checked field by field before anything changes.

Rules every endpoint shares:
- a body is one JSON object, at most `max_body` bytes, with no NaN/Infinity, no duplicate keys and no
  key the endpoint does not know;
- a field has one type: a boolean is not a number, a number is not a string;
- strings are NFC-normalised and refused when they hold control, format (bidirectional overrides,
  zero-width characters), surrogate, private-use or unassigned characters, or are longer than the
  field allows; identifiers (handles, ids, codes, emails, games) have a strict alphabet, so a string
  that looks like SQL is refused by their grammar, and free text goes to PostgreSQL as a bound
  parameter, never as SQL.
Chat text is the exception: control and format characters are stripped, not refused.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn

from engine.security.text import REFUSED_CATEGORIES, unsafe_char

_MAX_DEPTH: Final = 8

HANDLE_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,23}")
EMAIL_RE: Final = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
DEVICE_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")
ID_RE: Final = re.compile(r"[a-z]_[a-z0-9]{8,40}")  # account (a_...) and campaign (c_...) ids
GAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
CONFIG_KEY_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
CODE_RE: Final = re.compile(r"[A-Za-z0-9_-]{6,64}")
MSG_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Invalid(Exception):  # noqa: N818 - reads as "raise Invalid(...)"
    """A refused input; `field` names it, `str()` is the reason (both go to the client)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def fail(field: str, reason: str) -> NoReturn:
    raise Invalid(field, reason)


# -- JSON -------------------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:32]!r}")
        out[key] = value
    return out


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_json(raw: bytes) -> dict[str, Any]:
    """One JSON object, or Invalid."""
    if not raw:
        fail("", "the body must be a JSON object")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        fail("", "the body is not UTF-8")
    except (ValueError, RecursionError) as exc:
        fail("", f"the body is not valid JSON ({str(exc)[:80]})")
    if not isinstance(value, dict):
        fail("", "the body must be a JSON object")
    if _depth(value) > _MAX_DEPTH:
        fail("", f"the body nests deeper than {_MAX_DEPTH} levels")
    return value


# -- fields -----------------------------------------------------------------------------------------
Check = Callable[[str, Any], Any]


def fields(body: Mapping[str, Any], spec: Mapping[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check `body` against `spec` (field -> check); unknown fields and missing required ones are refused.
    Absent optional fields are absent from the result."""
    unknown = [k for k in body if k not in spec]
    if unknown:
        fail(unknown[0][:64], f"unknown field (allowed: {', '.join(sorted(spec))})")
    for name in required:
        if name not in body:
            fail(name, "required")
    return {name: check(name, body[name]) for name, check in spec.items() if name in body}


def clean_string(name: str, value: str, *, max_len: int, allow_newlines: bool = False) -> str:
    """NFC, within length, without refused characters (newline and tab optionally allowed)."""
    if len(value) > max_len * 4:  # before normalising a huge string
        fail(name, f"longer than {max_len} characters")
    text = unicodedata.normalize("NFC", value)
    if len(text) > max_len:
        fail(name, f"longer than {max_len} characters")
    bad = unsafe_char(text, allow="\n\t" if allow_newlines else "")
    if bad is not None:
        fail(name, f"contains a control, format or unassigned character (U+{ord(bad):04X})")
    return text


def text(min_len: int, max_len: int, *, allow_newlines: bool = False) -> Check:
    """Free text: trimmed, min_len..max_len characters."""

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            fail(name, "must be a string")
        out = clean_string(name, value, max_len=max_len, allow_newlines=allow_newlines).strip()
        if len(out) < min_len:
            fail(name, f"must have at least {min_len} characters" if min_len > 1 else "must not be blank")
        return out

    return check


def pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            fail(name, "must be a string")
        if len(value) > 256 or not regex.fullmatch(value):
            fail(name, f"must be {what}")
        return value

    return check


def integer(lo: int, hi: int) -> Check:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(name, "must be an integer")
        if not lo <= value <= hi:
            fail(name, f"must be in {lo}..{hi}")
        return value

    return check


def number(lo: float, hi: float) -> Check:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(name, "must be a number")
        # Bounds first: math.isfinite raises OverflowError on an int beyond any float (JSON allows one).
        if not lo <= value <= hi or not math.isfinite(value):
            fail(name, f"must be a finite number in {lo}..{hi}")
        return float(value)

    return check


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(name, "must be true or false")
    return value


def choice(*values: str) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in values:
            fail(name, f"must be one of {', '.join(values)}")
        return value

    return check


def obj(spec: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    def check(name: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            fail(name, "must be an object")
        try:
            return fields(value, spec, required)
        except Invalid as exc:
            fail(f"{name}.{exc.field}" if exc.field else name, exc.reason)

    return check


def array(item: Check, max_items: int) -> Check:
    def check(name: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            fail(name, "must be an array")
        if len(value) > max_items:
            fail(name, f"at most {max_items} items")
        return [item(f"{name}[{i}]", v) for i, v in enumerate(value)]

    return check


# -- the account fields -----------------------------------------------------------------------------
handle = pattern(HANDLE_RE, "3..24 characters of A-Z a-z 0-9 _, starting with a letter")
device_id = pattern(DEVICE_RE, "16..128 characters of A-Z a-z 0-9 _ -")
account_id = pattern(ID_RE, "an account id")
campaign_id = pattern(ID_RE, "a campaign id")
display_name = text(1, 32)


def email(name: str, value: Any) -> str:
    if not isinstance(value, str):
        fail(name, "must be a string")
    if len(value) > 254 or not EMAIL_RE.fullmatch(value):
        fail(name, "must be an email address (ASCII letters, digits and ._%+- before the @)")
    return value.lower()


def password(name: str, value: Any) -> str:
    if not isinstance(value, str):
        fail(name, "must be a string")
    if not 8 <= len(value) <= 128:
        fail(name, "must be 8..128 characters")
    return clean_string(name, value, max_len=128)


def login_name(name: str, value: Any) -> str:
    """An email or a handle (what the login form takes)."""
    if isinstance(value, str) and "@" in value:
        return email(name, value)
    return handle(name, value)


def config_map(max_keys: int = 32) -> Check:
    """A game's configuration: flat, short keys, numbers/strings/booleans."""
    value_text = text(0, 64)

    def check(name: str, value: Any) -> dict[str, int | float | str | bool]:
        if not isinstance(value, dict):
            fail(name, "must be an object")
        if len(value) > max_keys:
            fail(name, f"at most {max_keys} keys")
        out: dict[str, int | float | str | bool] = {}
        for key, v in value.items():
            if not CONFIG_KEY_RE.fullmatch(key):
                fail(f"{name}.{key[:32]}", "keys are 1..32 characters of a-z 0-9 _, starting with a letter")
            if isinstance(v, bool):
                out[key] = v
            elif isinstance(v, int):
                out[key] = integer(-(2**53), 2**53)(f"{name}.{key}", v)
            elif isinstance(v, float):
                out[key] = number(-1e15, 1e15)(f"{name}.{key}", v)
            elif isinstance(v, str):
                s = value_text(f"{name}.{key}", v)
                if "=" in s or s.startswith("-"):
                    fail(f"{name}.{key}", "must not contain '=' nor start with '-'")  # it becomes --set key=value
                out[key] = s
            else:
                fail(f"{name}.{key}", "must be a number, a string or a boolean")
        return out

    return check


# -- chat -------------------------------------------------------------------------------------------
def chat_text(value: Any, max_len: int) -> str:
    """Chat: control and format characters (but newlines) are stripped; the rest must fit."""
    if not isinstance(value, str):
        fail("text", "must be a string")
    if len(value) > max_len * 4:
        fail("text", f"longer than {max_len} characters")
    text_ = unicodedata.normalize("NFC", value)
    kept = "".join(ch for ch in text_ if ch == "\n" or unicodedata.category(ch) not in REFUSED_CATEGORIES).strip()
    kept = re.sub(r"\n{3,}", "\n\n", kept)
    if not kept:
        fail("text", "is empty once control characters are removed")
    if len(kept) > max_len:
        fail("text", f"longer than {max_len} characters")
    return kept


# -- query strings ----------------------------------------------------------------------------------
def query(params: Mapping[str, str], spec: Mapping[str, Check]) -> dict[str, Any]:
    """Query parameters, strings in, checked values out (integers parsed first where asked)."""
    out: dict[str, Any] = {}
    unknown = [k for k in params if k not in spec]
    if unknown:
        fail(unknown[0][:64], f"unknown parameter (allowed: {', '.join(sorted(spec))})")
    for name, check in spec.items():
        if name in params:
            out[name] = check(name, params[name])
    return out


def query_int(lo: int, hi: int) -> Check:
    def check(name: str, value: Any) -> int:
        if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]{1,12}", value):
            fail(name, "must be an integer")
        return integer(lo, hi)(name, int(value))

    return check


def query_bool(name: str, value: Any) -> bool:
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    fail(name, "must be 1/0 or true/false")
