"""Startales, the reference game: constants.py (numbers), inputs.py (the input system and its
validators), rules.py (rules and state validators), brain.py (the bot brain), game.py (the
declaration, `Startales`)."""
