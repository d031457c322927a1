"""Campaign schedules: what a creator may ask for, and when a campaign opens and closes.

    {"kind": "now"}                                         open at once, until its owner completes it
    {"kind": "at", "start": T}                              scheduled until T, then open
    {"kind": "once", "start": T, "hours": H}                a one-shot window (H ≤ 24, default 24);
                                                            completed when it ends
    {"kind": "weekly", "slots": [{"day": D, "start": "HH:MM", "hours": H}, ...]}
                                                            recurring UTC slots (day 0 = Monday);
                                                            between slots it is scheduled again

T is Unix seconds. Pure functions of the schedule and a time: the lifecycle sweeper (hub/lifecycle.py)
applies them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final

from hub import validate as v

UTC: Final = dt.UTC
_HHMM: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_SLOT = v.obj({"day": v.integer(0, 6), "start": v.pattern(_HHMM, "HH:MM (UTC)"), "hours": v.number(0.25, 24)},
              ("day", "start", "hours"))  # fmt: skip
_FAR: Final = 4102444800.0  # 2100-01-01


def check(name: str, value: Any) -> dict[str, Any]:
    """The validated schedule (a `validate` check)."""
    if not isinstance(value, dict):
        v.fail(name, "must be an object")
    kind = value.get("kind")
    specs: dict[str, tuple[dict[str, v.Check], tuple[str, ...]]] = {
        "now": ({"kind": v.choice("now")}, ()),
        "at": ({"kind": v.choice("at"), "start": v.number(0, _FAR)}, ("start",)),
        "once": ({"kind": v.choice("once"), "start": v.number(0, _FAR), "hours": v.number(0.25, 24)}, ("start",)),
        "weekly": ({"kind": v.choice("weekly"), "slots": v.array(_SLOT, 14)}, ("slots",)),
    }
    if not isinstance(kind, str) or kind not in specs:
        v.fail(f"{name}.kind", "must be one of now, at, once, weekly")
    spec, required = specs[kind]
    out = v.obj(spec, required)(name, value)
    if kind == "once":
        out.setdefault("hours", 24.0)
    if kind == "weekly" and not out["slots"]:
        v.fail(f"{name}.slots", "at least one slot")
    return out


def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, UTC)


def next_weekly(slots: list[dict[str, Any]], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The slot in progress at `now`, else the next one: (start, end)."""
    monday = (now - dt.timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    best: tuple[dt.datetime, dt.datetime] | None = None
    for week in (-1, 0, 1):
        for slot in slots:
            hh, mm = (int(x) for x in slot["start"].split(":"))
            start = monday + dt.timedelta(weeks=week, days=int(slot["day"]), hours=hh, minutes=mm)
            end = start + dt.timedelta(hours=float(slot["hours"]))
            if end > now and (best is None or start < best[0]):
                best = (start, end)
    assert best is not None
    return best


def window(schedule: dict[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(starts_at, ends_at) of the current or next window; None = unbounded."""
    kind = schedule.get("kind", "now")
    if kind == "at":
        return _at(schedule["start"]), None
    if kind == "once":
        start = _at(schedule["start"])
        return start, start + dt.timedelta(hours=float(schedule["hours"]))
    if kind == "weekly":
        return next_weekly(schedule["slots"], now)
    return None, None


def initial_status(schedule: dict[str, Any], now: dt.datetime) -> tuple[str, dt.datetime | None, dt.datetime | None]:
    """(status, starts_at, ends_at) for a new campaign."""
    start, end = window(schedule, now)
    if end is not None and end <= now:
        v.fail("schedule", "the window is already over")
    if start is None or start <= now:
        return "open", start, end
    return "scheduled", start, end
