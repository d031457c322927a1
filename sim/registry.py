"""Game registry: name → game class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sim.game_api import Game
from sim.games.startales.game import StartalesGame
from sim.games.wander import WanderGame

GAMES: Final = ("startales", "wander")


def make_game(name: str, config: Mapping[str, object] | None = None) -> Game:
    if name == "startales":
        return StartalesGame(config)
    if name == "wander":
        return WanderGame(config)
    raise ValueError(f"unknown game {name!r}; known: {', '.join(GAMES)}")
