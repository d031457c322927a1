"""Startales, the reference game: constants.py (numbers), inputs.py (the input kernel and its
validators), rules.py (rules and state validators), game.py (the Game)."""
