"""The join-token replay cache across restarts: the live token ids in a small JSON file per campaign.

A restart must not reopen a replay window for tokens still within their lifetime. The server loads
the file at start and rewrites it (write-then-rename, off the loop thread) at most once a second
when tokens were used, and at shutdown; after a `kill -9` at most the last second of joins is
forgotten (their tokens could be replayed until they expire, by design short-lived).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from engine.auth import ReplayCache

log = logging.getLogger("arbiter.auth")
FILE_NAME = "token_replay.json"


def load(path: Path, cache: ReplayCache, now: float) -> int:
    """Remember the persisted, still-live token ids; how many. A missing or bad file is empty."""
    try:
        entries = json.loads(path.read_text())
        return cache.import_(((str(j), float(t)) for j, t in entries), now)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, TypeError) as exc:
        log.warning("token replay cache %s unreadable (%s); starting empty", path, exc)
        return 0


def save(path: Path, entries: list[tuple[str, float]]) -> None:
    """Write atomically (blocking: call it in a thread)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, separators=(",", ":")))
    os.replace(tmp, path)
