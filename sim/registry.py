"""Games by name: every `arbiter.games` entry point (the built-in games register the same way,
in pyproject.toml), plus games registered in-process with `register` (tests, embedding)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

from sim.game_api import Game
from sim.spec import ConfigError

GROUP = "arbiter.games"
_registered: dict[str, type[Game]] = {}


def register(game: type[Game]) -> type[Game]:
    """Make `game` known by its name in this process (usable as a class decorator)."""
    _registered[game.name] = game
    return game


def game_names() -> list[str]:
    """Every known game, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(_registered))


def game_class(name: str) -> type[Game]:
    if name in _registered:
        return _registered[name]
    for ep in entry_points(group=GROUP, name=name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Game)):
            raise TypeError(f"entry point {GROUP}:{name} is {cls!r}, not a Game subclass")
        return cls
    raise ConfigError(f"unknown game {name!r}; known: {', '.join(game_names()) or 'none'}")


def make_game(name: str, config: Mapping[str, object] | None = None) -> Game:
    return game_class(name)(config)
