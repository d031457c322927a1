"""The hub: accounts, sessions, campaigns and their placement, presence, friends, chat, leaderboards
and reports, over HTTP + WebSocket (aiohttp, JSON, `/v1/...`). Its own process (`arbiter hub`); it
meets the game servers only through Redis, PostgreSQL, join tokens and HTTP. See docs/hub.md."""
