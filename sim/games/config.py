"""Reading a game's config mapping: known keys only, integers in range."""

from __future__ import annotations

from collections.abc import Mapping


def read_config(
    config: Mapping[str, object] | None, spec: Mapping[str, tuple[int, int, int]], game: str
) -> dict[str, int]:
    """spec: key -> (default, lo, hi). Unknown keys and out-of-range values raise ValueError."""
    config = config or {}
    unknown = sorted(set(config) - set(spec))
    if unknown:
        raise ValueError(f"{game}: unknown config keys {unknown}; known: {sorted(spec)}")
    out: dict[str, int] = {}
    for key in sorted(spec):
        default, lo, hi = spec[key]
        raw = config.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError(f"{game}: config {key!r} must be an integer, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{game}: config {key!r} must be an integer, got {raw!r}") from None
        if value != raw and not isinstance(raw, str):
            raise ValueError(f"{game}: config {key!r} must be an integer, got {raw!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{game}: config {key!r}={value} outside [{lo}, {hi}]")
        out[key] = value
    return out
