"""Startales, the reference game: constants.py (numbers), inputs.py (the input kernel and its
validators), rules.py (rules and state validators), game.py (the Game)."""

from sim.games.startales.constants import *  # noqa: F403 - the game's public numbers
from sim.games.startales.game import KIND_DRONE, KIND_PLANET, KIND_SHIP, StartalesGame, scan_arg

__all__ = ["KIND_DRONE", "KIND_PLANET", "KIND_SHIP", "StartalesGame", "scan_arg"]
