"""The built-in games (each registered as an `arbiter.games` entry point in pyproject.toml)."""

from typing import Final

DEFAULT_GAME: Final = "startales"  # what `arbiter serve` and `arbiter demo` run unless told otherwise
