"""Player progress and the resource ledger reach PostgreSQL, and come back on join (real server)."""

from __future__ import annotations

import asyncpg
import numpy as np

from engine.campaign import Campaign
from engine.progress import ProgressSync, player_progress
from persistence.pg_writer import PgWriteBehind
from sim.entities import SLOT_MASK
from sim.games.startales.constants import ACTION_HARVEST
from tests.pgutil import dsn as _dsn
from tests.serverutil import running_server, url, wait_for


def _park_at_planet(campaign: Campaign, eid: int) -> None:
    """Test setup: put the ship on top of planet 0 (slot 0) so that it can harvest at once."""
    a = campaign.world.arrays
    a["x"][eid & SLOT_MASK] = a["x"][0]
    a["y"][eid & SLOT_MASK] = a["y"][0]


async def test_ledger_rows_are_exact_and_progress_round_trips(pg_database: str) -> None:
    dsn = _dsn(pg_database)
    pg = PgWriteBehind(dsn, schema="progress_unit")
    await pg.start()
    campaign = Campaign("startales", 3, {}, "camp-a")
    sync = ProgressSync(pg, campaign)
    eid, _ = campaign.join("ada", "acct-ada")
    sync.joined(eid, "acct-ada", "ada")
    _park_at_planet(campaign, eid)
    campaign.submit(eid, 1, 0, (0.0, 0.0, ACTION_HARVEST, 0))
    for _ in range(120):
        sync.on_tick(campaign.tick())
    final = player_progress(campaign, eid)
    res = int(campaign.world.arrays["planet_res"][0])
    assert int(final["resources"][str(res)]) > 0
    sync.save()
    assert await pg.flush(10)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT amount, balance_after FROM progress_unit.transactions WHERE account_id = $1 ORDER BY tick",
            "acct-ada",
        )
        # Every unit harvested is one ledger amount; balances chain without gaps.
        assert sum(r["amount"] for r in rows) == int(final["resources"][str(res)])
        assert [r["balance_after"] for r in rows] == list(np.cumsum([r["amount"] for r in rows]))
    finally:
        await conn.close()
    loaded = await pg.load_progress("acct-ada", "camp-a")
    assert loaded is not None and loaded["resources"][str(res)] == final["resources"][str(res)]
    # A fresh ship of the same account in another world takes the progress over, and the journal
    # record of that join replays to the same state.
    other = Campaign("startales", 3, {}, "camp-a")
    joins: list = []
    other.recorder = lambda tick, j, lv, inputs: joins.extend(j)
    eid2, _ = other.join("ada", "acct-ada", {k: loaded[k] for k in ("resources", "buildings", "achievements")})
    other.tick()
    assert player_progress(other, eid2)["resources"] == final["resources"]
    replayed = Campaign("startales", 3, {}, "camp-a")
    empty = np.zeros(0, dtype=[("eid", "<u4"), ("seq", "<u4"), ("client_tick", "<u4"), ("dx", "<f4"),
                               ("dy", "<f4"), ("action", "<i4"), ("arg", "<i4")])  # fmt: skip
    replayed.apply_record(joins, [], empty, 1)
    assert replayed.state_hash() == other.state_hash()
    assert await pg.stop(5)


async def test_server_saves_progress_on_leave_and_restores_it_on_join(pg_database: str) -> None:
    dsn = _dsn(pg_database)
    async with running_server(game="startales", pg_dsn=dsn, campaign="camp-b") as server:
        from netcode.client import ArbiterClient

        c = await ArbiterClient.connect(url(server), "bob")
        _park_at_planet(server.campaign, c.player)
        c.send_input(0.0, 0.0, ACTION_HARVEST)
        await wait_for(lambda: any(e[0] == 2 for e in c.events), timeout=5)
        await c.close()
        await wait_for(lambda: not server.campaign.players)
        saved = server.progress.pg if server.progress else None
        assert saved is not None and await saved.flush(10)
        stored = await saved.load_progress("bob", "camp-b")
    assert stored is not None and sum(stored["resources"].values()) > 0
    async with running_server(game="startales", pg_dsn=dsn, campaign="camp-b") as server:
        from netcode.client import ArbiterClient

        c = await ArbiterClient.connect(url(server), "bob")
        got = player_progress(server.campaign, c.player)["resources"]
        assert {k: v for k, v in got.items() if v} == {k: v for k, v in stored["resources"].items() if v}
        await c.close()
