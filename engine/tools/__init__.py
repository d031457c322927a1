"""Tools around the runtime: demo, launcher, bots, replay, token issuing."""
