"""`arbiter bots` against a campaign that is not "default", with join tokens on: the bots learn the
campaign (and the game) from the server, and say why when their connections are refused."""

from __future__ import annotations

import asyncio

from engine.tools.bots import BotConfig, run_bots, server_info
from tests.serverutil import running_server, url
from tests.tokens import Tokens


async def test_bots_learn_the_campaign_from_the_server_or_say_why_they_were_refused(tokens: Tokens) -> None:
    async with running_server(tokens.verifier("league-7"), game="wander", campaign="league-7",
                              game_config={"npcs": 10}) as server:  # fmt: skip
        info = await asyncio.to_thread(server_info, url(server))
        assert (info["game"], info["campaign"]) == ("wander", "league-7")
        report = await run_bots(BotConfig(url=url(server), count=3, duration=0.5, token_factory=tokens.factory()))
        assert report.connected == 3 and report.connect_failures == 0, report
        assert report.game == "wander"
        told = await run_bots(BotConfig(url=url(server), count=3, duration=0.2, campaign="default",
                                        token_factory=tokens.factory(), name_prefix="w"))  # fmt: skip
        assert told.connected == 0 and told.connect_failures == 3
        ((reason, n),) = told.connect_errors.items()
        assert n == 3 and reason.startswith("TOKEN_WRONG_CAMPAIGN"), told.connect_errors
