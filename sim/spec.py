"""The declarative parts of a game: what a game file writes down and the engine derives the rest from.

    class Wander(Game):
        components = (
            Component("x", "f4", replicate=Fixed(0, "width", 1 / 64)),
            Component("hp", "u1", 100, replicate=Whole(0, 255)),
        )
        inputs = (Input("dx", "f32", -1, 1), Input("dy", "f32", -1, 1))
        config = {"npcs": (1000, 0, 2**19)}
        move = Velocity(("dx", "dy"), speed="player_speed")

Names in quantization bounds, move parameters and table lengths ("width", "npcs") are looked up
in the game's parameters (its constants, config and derived values) when a game is configured.
See docs/writing-a-game.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Final, Literal

import numpy as np

Ref = float | int | str  # a number, or the name of a game parameter

INPUT_TYPES: Final = {"f32": np.float32, "i32": np.int32, "u32": np.uint32}
_INPUT_LIMITS: Final = {"f32": (-3.4e38, 3.4e38), "i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1)}


@dataclass(frozen=True)
class Fixed:
    """Replicated as fixed point: q = round((v - lo) / step), v' = lo + q * step, clipped to [lo, hi]."""

    lo: Ref
    hi: Ref
    step: float


@dataclass(frozen=True)
class Whole:
    """Replicated as an integer clipped to [lo, hi]."""

    lo: Ref
    hi: Ref


Quantization = Fixed | Whole


@dataclass(frozen=True)
class Component:
    """A field of every entity (an array of `capacity`); `replicate` puts it in snapshots."""

    name: str
    dtype: str
    default: float | int = 0
    replicate: Quantization | None = None


@dataclass(frozen=True)
class Player:
    """A field of every player slot (an array of `max_players`, indexed by slot - player_lo)."""

    name: str
    dtype: str
    default: float | int = 0


@dataclass(frozen=True)
class Table:
    """A game-wide array of `length` (a number or a parameter name), e.g. a ledger or per-planet data."""

    name: str
    dtype: str
    length: Ref
    fill: float | int = 0


@dataclass(frozen=True)
class Input:
    """One input field: its column `name` in the input batch, its wire `key` (default: the name),
    its type and legal range. An absent key means 0 (or `lo` when 0 is not legal)."""

    name: str
    type: Literal["f32", "i32", "u32"] = "f32"
    lo: float = -1.0
    hi: float = 1.0
    key: str = ""

    def __post_init__(self) -> None:
        if self.type not in INPUT_TYPES:
            raise ValueError(f"input {self.name!r}: type must be one of {sorted(INPUT_TYPES)}")
        tlo, thi = _INPUT_LIMITS[self.type]
        if not tlo <= self.lo <= self.hi <= thi:
            raise ValueError(f"input {self.name!r}: range [{self.lo}, {self.hi}] not within its type")
        if not self.key:
            object.__setattr__(self, "key", self.name)

    @property
    def default(self) -> float | int:
        zero = 0.0 if self.type == "f32" else 0
        return zero if self.lo <= 0 <= self.hi else (self.lo if self.type == "f32" else int(self.lo))


@dataclass(frozen=True)
class Velocity:
    """Player movement: velocity = (in_x, in_y) * speed from the latest accepted input; position
    integrates at dt and is clamped to the bounds."""

    keys: tuple[str, str]
    speed: Ref
    bounds: tuple[Ref, Ref, Ref, Ref] = (0.0, 0.0, "width", "height")
    rule: Literal["velocity"] = "velocity"


@dataclass(frozen=True)
class Thrust:
    """Player movement: acceleration `accel` along (in_x, in_y), speed capped at `max_speed`,
    position clamped to the bounds."""

    keys: tuple[str, str]
    accel: Ref
    max_speed: Ref
    bounds: tuple[Ref, Ref, Ref, Ref] = (0.0, 0.0, "width", "height")
    rule: Literal["thrust"] = "thrust"


Move = Velocity | Thrust


class _PlayerMoves:
    """The place of the engine's player-movement system in a game's `systems` (default: first)."""

    def __repr__(self) -> str:
        return "MOVE_PLAYERS"


MOVE_PLAYERS: Final = _PlayerMoves()


@dataclass(frozen=True)
class LagComp:
    """Lag compensation: the positions of the entities in `slots` ("npcs" or "players") are kept
    for `max_rewind_s` seconds, so an action can be checked against where its target was at the
    tick the client displayed; the rewind one input may claim is also bounded by its connection's
    measured latency (sim/history.py)."""

    slots: Literal["npcs", "players"]
    max_rewind_s: float = 0.4


@dataclass(frozen=True)
class Style:
    """How a generic renderer draws an entity."""

    shape: Literal["circle", "square", "triangle", "ship"] = "circle"
    color: str = "#cccccc"
    size: float = 4.0
    label: str = ""

    def wire(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": float(self.size), "label": self.label}


@dataclass(frozen=True)
class Draw:
    """Draw hints: the replicated `field` whose value picks a style (None: one style for all)."""

    field: str | None = None
    styles: Mapping[int, Style] = dc_field(default_factory=dict)
    default: Style = Style()
    player: Style = Style("ship", "#ffffff", 8.0, "you")

    def wire(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "styles": {str(k): s.wire() for k, s in sorted(self.styles.items())},
            "default": self.default.wire(),
            "player": self.player.wire(),
        }


ConfigSpec = Mapping[str, tuple[int, int, int]]  # key -> (default, lo, hi)


class ConfigError(ValueError):
    """A game's configuration (or its name) is not what the game accepts: a user's mistake."""


def read_config(config: Mapping[str, object] | None, spec: ConfigSpec, game: str) -> dict[str, int]:
    """spec: key -> (default, lo, hi). Unknown keys and out-of-range values raise ValueError."""
    config = config or {}
    unknown = sorted(set(config) - set(spec))
    if unknown:
        raise ConfigError(f"{game}: unknown config keys {unknown}; known: {sorted(spec)}")
    out: dict[str, int] = {}
    for key in sorted(spec):
        default, lo, hi = spec[key]
        raw = config.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ConfigError(f"{game}: config {key!r} must be an integer, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{game}: config {key!r} must be an integer, got {raw!r}") from None
        if value != raw and not isinstance(raw, str):
            raise ConfigError(f"{game}: config {key!r} must be an integer, got {raw!r}")
        if not lo <= value <= hi:
            raise ConfigError(f"{game}: config {key!r}={value} outside [{lo}, {hi}]")
        out[key] = value
    return out


def resolve(ref: Ref, params: Mapping[str, Any], what: str) -> float:
    """A number, or the value of the parameter it names."""
    if isinstance(ref, str):
        if ref not in params:
            raise ValueError(f"{what}: no parameter {ref!r}")
        return float(params[ref])
    return float(ref)
