"""Proximity voice routing (Sans-I/O): who a listener hears, and in which of its audio slots.

A listener offers a fixed number of receive audio sections (its slots, at most MAX_VOICE_SLOTS);
the server forwards, unchanged, the Opus packets of up to that many speakers: those within the
voice radius, nearest first, that talk (push-to-talk held), are not muted by the server and not
blocked by the listener. A speaker who stays routed keeps its slot, so a listener's audio does not
jump between streams when someone else comes or goes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def nearest(
    x: float,
    y: float,
    ids: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    radius: float,
    k: int,
    exclude: Collection[int] = (),
) -> list[int]:
    """Up to `k` of `ids` (positions sx, sy) within `radius` of (x, y), nearest first; ties by id."""
    if k <= 0 or ids.size == 0:
        return []
    d2 = (sx - x) ** 2 + (sy - y) ** 2
    ok = d2 <= radius * radius
    if exclude:
        ok &= ~np.isin(ids, np.fromiter(exclude, np.int64, len(exclude)))
    idx = np.flatnonzero(ok)
    order = np.lexsort((ids[idx], d2[idx]))[:k]
    return [int(i) for i in ids[idx][order]]


def assign_slots(current: Sequence[int], wanted: Sequence[int]) -> list[int]:
    """New slot contents (0 = silent) of the same length as `current`: speakers in both keep their
    slot, new ones fill the free slots in `wanted` order (which is nearest first)."""
    keep = set(wanted)
    slots = [c if c in keep else 0 for c in current]
    placed = set(slots)
    free = (i for i, c in enumerate(slots) if c == 0)
    for w in wanted:
        if w in placed:
            continue
        i = next(free, None)
        if i is None:
            break
        slots[i] = w
        placed.add(w)
    return slots
