"""Relocation through PostgreSQL: shipping, fencing, outages, kill -9 with disk loss, drain."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from engine.recovery import open_campaign
from engine.relocation import ShipConfig, restore_from_pg
from engine.tools.launcher import ServerProcess, start_server
from netcode.client import ArbiterClient, FixedLocator, Reconnect
from persistence.campaign_reader import StoreReader
from persistence.campaign_store import DB_FILENAME
from persistence.pg_migrations import migrate
from persistence.pg_ship import META_EPOCH, FencedError, ShipStore, encode_segment
from tests.pgutil import PG_HOST, PG_PORT, dsn, fresh_database
from tests.serverutil import running_server, wait_for
from tests.tcp_proxy import TcpProxy


async def _play(clients: list[ArbiterClient], seconds: float, rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for c in clients:
            if c.is_open and not c.reconnecting:
                c.send_input(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6))
        await asyncio.sleep(0.05)


def _replay_verify(data_dir: Path) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(data_dir), "--verify", "--json"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep: dict[str, object] = json.loads(r.stdout)
    return rep


async def test_a_newer_owner_fences_the_old_one(pg_database: str) -> None:
    conn = await asyncpg.connect(dsn(pg_database))
    try:
        await migrate(conn, "ship_fence")
        store = ShipStore("ship_fence")
        first = await store.claim(conn, "c", {"game": "wander"}, "a", local_epoch=None, local_tick=0)
        assert first.created and first.epoch == 1
        seg = encode_segment([(1, b"x", None), (2, b"y", "00000000000000ab")])
        assert await store.write_segment(conn, "c", 1, 1, 2, seg)
        assert not await store.write_segment(conn, "c", 1, 1, 2, seg)  # a retry changes nothing
        # A second server with the same data takes over (epoch 2); the first one is fenced off.
        second = await store.claim(conn, "c", {"game": "wander"}, "b", local_epoch=1, local_tick=2)
        assert second.epoch == 2 and second.journal_tick == 2
        try:
            await store.write_segment(conn, "c", 1, 3, 3, encode_segment([(3, b"z", None)]))
            raise AssertionError("the old owner wrote after a takeover")
        except FencedError:
            pass
        # Local data older than PostgreSQL's copy may not claim it (it would fork the history).
        for local_epoch, local_tick in ((1, 5), (None, 5), (2, 1)):
            try:
                await store.claim(conn, "c", {}, "c", local_epoch=local_epoch, local_tick=local_tick)
                raise AssertionError(f"stale copy {local_epoch, local_tick} claimed the campaign")
            except FencedError:
                pass
        shipped = await store.fetch(conn, "c")
        assert shipped is not None and [r[0] for r in shipped.journal] == [1, 2] and shipped.epoch == 2
    finally:
        await conn.close()


async def test_postgres_outage_during_shipping_loses_nothing(tmp_path: Path) -> None:
    async with fresh_database() as db:
        proxy = await TcpProxy(PG_HOST, PG_PORT).start()
        ship = ShipConfig(interval_s=0.1, snapshot_every_s=3600.0)
        try:
            async with running_server(game="wander", game_config={"npcs": 20}, data_dir=str(tmp_path), campaign="out",
                                      pg_dsn=dsn(db, proxy.port), ship=ship) as server:  # fmt: skip
                shipper = server.shipper
                assert shipper is not None and server.journal is not None
                clients = [await ArbiterClient.connect(f"ws://127.0.0.1:{server.port}/", f"p{i}") for i in range(3)]
                rng = random.Random(5)
                await wait_for(lambda: shipper.shipped_tick > 0, timeout=10)
                await _play(clients, 0.3, rng)
                await proxy.cut()
                cut_at = shipper.shipped_tick
                await _play(clients, 1.0, rng)
                # The tick went on, PostgreSQL fell behind and the shipper noticed.
                assert server.journal.store.committed_tick > cut_at + 30
                await wait_for(lambda: shipper.failures > 0, timeout=5)
                assert shipper.shipped_tick < server.journal.store.committed_tick
                await proxy.restore()
                target = server.journal.store.committed_tick
                await wait_for(lambda: shipper.shipped_tick >= target, timeout=15)
                for c in clients:
                    await c.close()
            # Every record the local journal has up to `target` is in PostgreSQL, byte for byte.
            conn = await asyncpg.connect(dsn(db))
            try:
                shipped = await ShipStore().fetch(conn, "out")
            finally:
                await conn.close()
            assert shipped is not None and shipped.journal_tick >= target
            reader = StoreReader(tmp_path / "out" / DB_FILENAME)
            try:
                local = reader.journal_rows(shipped.base_tick, 1 << 30)
            finally:
                reader.close()
            assert shipped.journal == local[: len(shipped.journal)]
            assert len(shipped.journal) == shipped.journal_tick - shipped.base_tick
        finally:
            await proxy.close()


async def test_a_drained_campaign_restores_elsewhere_with_the_same_state(tmp_path: Path) -> None:
    async with fresh_database() as db:
        async with running_server(game="startales", data_dir=str(tmp_path / "a"), campaign="moved",
                                  pg_dsn=dsn(db), ship=ShipConfig(interval_s=0.2)) as server:  # fmt: skip
            c = await ArbiterClient.connect(f"ws://127.0.0.1:{server.port}/", "ada")
            for _ in range(20):
                c.send_input(0.5, 0.2)
                await asyncio.sleep(0.02)
            await c.next_snapshot()
        final = server.campaign.state_hash()
        assert server.shipper is not None and server.shipper.shipped_tick == server.campaign.tick_count
        report = await restore_from_pg(dsn(db), str(tmp_path / "b"), "moved")
        assert report.restored
        campaign, store, _ = open_campaign(tmp_path / "b", "moved", "startales", 1, {})
        try:
            assert campaign.state_hash() == final
            assert campaign.accounts == {"ada": c.player}  # sealed before the bye: the ship stays
        finally:
            store.close()
        # A second restore finds the local copy current and leaves it alone.
        assert not (await restore_from_pg(dsn(db), str(tmp_path / "b"), "moved")).restored
        # The fresh copy holds a snapshot and no journal yet; the new server's claim counts the
        # snapshot, or PostgreSQL's copy would look newer and fence it (it did, when its first
        # claim came before its first journal commit).
        reader = StoreReader(tmp_path / "b" / "moved" / DB_FILENAME)
        try:
            meta, held, journal = reader.meta(), reader.held_tick(), reader.last_tick()
        finally:
            reader.close()
        assert (journal, held) == (0, server.campaign.tick_count)
        conn = await asyncpg.connect(dsn(db))
        try:
            epoch = int(meta.pop(META_EPOCH))
            claim = await ShipStore().claim(conn, "moved", meta, "b", local_epoch=epoch, local_tick=held)
        finally:
            await conn.close()
        assert (claim.epoch, claim.journal_tick) == (epoch + 1, held)


async def _connect_all(url: str, n: int, locator: FixedLocator) -> list[ArbiterClient]:
    rc = Reconnect(locator, timeout=90.0)
    return [await ArbiterClient.connect(url, f"pilot{i}", reconnect=rc) for i in range(n)]


async def _rejoined_with_ships(clients: list[ArbiterClient], players: dict[str, int], acked: dict[str, int]) -> float:
    """Wait until every client plays again on the new server; returns when the last one got there."""
    loop = asyncio.get_running_loop()
    for c in clients:
        await c.wait_rejoined(90.0)
        assert c.player == players[c.name], "the player found another ship"
        while True:
            snap = await c.next_snapshot(10.0)
            if snap.ack_seq >= acked[c.name]:
                break
        assert c.player in set(snap.entities["id"].tolist())
    return loop.time()


async def test_kill_9_and_disk_loss_relocates_to_another_server(tmp_path: Path) -> None:
    """The campaign's machine dies with its disk: it comes back on another server from PostgreSQL.
    With --ack-after pg, nothing a player saw acknowledged is lost."""
    async with fresh_database() as db:
        common = ["--game", "startales", "--seed", "4", "--campaign", "reloc", "--fairplay", "observe",
                  "--pg", dsn(db), "--ack-after", "pg"]  # fmt: skip
        a = start_server([*common, "--data-dir", str(tmp_path / "a")])
        b: ServerProcess | None = None
        clients: list[ArbiterClient] = []
        try:
            locator = FixedLocator(a.url)  # the test points it at the server that takes over
            clients = await _connect_all(a.url, 5, locator)
            players = {c.name: c.player for c in clients}
            await _play(clients, 1.5, random.Random(11))
            await wait_for(lambda: all(c.latest is not None and c.latest.ack_seq > 0 for c in clients), timeout=10)
            acked = {c.name: c.session.last_ack_seq for c in clients}
            killed_at = asyncio.get_running_loop().time()
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            shutil.rmtree(tmp_path / "a")  # the disk is gone with the machine
            b = start_server([*common, "--data-dir", str(tmp_path / "b")])
            locator.url = b.url
            back_at = await _rejoined_with_ships(clients, players, acked)
            print(f"relocation: {back_at - killed_at:.2f} s from kill -9 to every player playing on the new server")
            await _play(clients, 0.3, random.Random(12))
            for c in clients:
                await c.close()
            assert b.stop() == 0
            rep = _replay_verify(tmp_path / "b")
            assert rep["ok"] and int(rep["hashes_verified"]) > 0 and int(rep["ticks"]) > 0  # type: ignore[call-overload]
        finally:
            for c in clients:
                if c.conn is not None:
                    c.conn.abort()
            a.kill()
            if b is not None:
                b.kill()


async def test_drain_says_relocate_and_loses_no_acknowledged_input(tmp_path: Path) -> None:
    """SIGTERM drains: final snapshot locally and to PostgreSQL, then `bye` "relocate"; the SDK
    rejoins by itself on the next server (here another machine, restoring from PostgreSQL)."""
    async with fresh_database() as db:
        common = ["--game", "startales", "--seed", "6", "--campaign", "drain", "--fairplay", "observe", "--pg", dsn(db)]
        a = start_server([*common, "--data-dir", str(tmp_path / "a")])
        b: ServerProcess | None = None
        clients: list[ArbiterClient] = []
        try:
            locator = FixedLocator(a.url)
            clients = await _connect_all(a.url, 4, locator)
            players = {c.name: c.player for c in clients}
            await _play(clients, 1.0, random.Random(3))
            acked = {c.name: c.session.last_ack_seq for c in clients}
            assert min(acked.values()) > 0
            assert a.stop() == 0  # SIGTERM
            for c in clients:
                await wait_for(lambda c=c: c.reconnecting, timeout=10)
                assert c.rejoin_cause == "relocate"
            b = start_server([*common, "--data-dir", str(tmp_path / "b")])
            locator.url = b.url
            await _rejoined_with_ships(clients, players, acked)
            # The second server takes the campaign over (the shipping figures are in /stats/full, for
            # admin tokens; this server runs without keys, so ask PostgreSQL). Its claim runs in the
            # background (a server plays on while PostgreSQL is away), so it may land after the rejoin.
            conn = await asyncpg.connect(dsn(db))
            try:
                sql = "SELECT epoch FROM shipped_campaigns WHERE campaign_id = 'drain'"
                deadline = asyncio.get_running_loop().time() + 15
                while (epoch := await conn.fetchval(sql)) != 2 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()
            assert epoch == 2
        finally:
            for c in clients:
                await c.close()
            a.kill()
            if b is not None:
                b.stop()


def test_no_local_data_and_no_postgres_is_a_clear_error(tmp_path: Path) -> None:
    """Starting empty while PostgreSQL may hold the campaign would fork its history: refuse, one line."""
    r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--port", "0", "--data-dir", str(tmp_path),
                        "--campaign", "lost", "--pg", "postgresql://postgres@127.0.0.1:9/none", "--restore-timeout",
                        "0.3"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("arbiter serve: campaign lost has no local data") and "Traceback" not in r.stderr
    assert not (tmp_path / "lost").exists()
