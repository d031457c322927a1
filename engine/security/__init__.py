"""Security: join tokens, their replay cache, the admin API, fair play."""
