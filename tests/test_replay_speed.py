"""The fast replay path (JournalScan + apply_record) gives exactly what the store's reader gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from engine.campaign import Campaign
from engine.journal import Journal
from engine.recovery import JournalScan, open_campaign, replay_records
from persistence.campaign_store import CampaignStore


def _play(campaign: Campaign, ticks: int) -> None:
    rng = np.random.default_rng(5)
    eids = [campaign.join(f"p{i}")[0] for i in range(5)]
    seq = dict.fromkeys(eids, 0)
    for t in range(ticks):
        for e in eids:
            if rng.random() < 0.5:
                seq[e] += 1
                campaign.submit(e, seq[e], t, (float(rng.uniform(-0.7, 0.7)), 0.1, int(rng.integers(0, 3)), 0))
        if t == ticks // 3:
            campaign.leave(eids.pop(0))
            eids.append(campaign.join("late")[0])
            seq[eids[-1]] = 0
        campaign.tick()


LAYOUT = Campaign("startales", 1).inputs.dtype


def _full(inputs: np.ndarray) -> bytes:
    """The inputs as full-layout bytes: the scan's fast path yields only the columns a tick used."""
    out = np.zeros(len(inputs), dtype=LAYOUT)
    for name in inputs.dtype.names or ():
        out[name] = inputs[name]
    return out.tobytes()


def _rows(store: CampaignStore, after: int) -> list[tuple[int, list, list, bytes, str | None]]:
    return [(e.tick, e.record.joins, e.record.leaves, _full(e.record.inputs), e.state_hash)
            for e in store.iter_journal(after)]  # fmt: skip


def test_scan_matches_store_reader_and_reports_the_same_problem(tmp_path: Path) -> None:
    campaign, store, _ = open_campaign(tmp_path, "c", "startales", 3, {})
    Journal(campaign, store, snapshot_every=1000, hash_every=7)
    _play(campaign, 90)
    assert store.flush(10)
    scan = JournalScan(store, 0, batch=16)
    got = [(t, j, lv, _full(i), h) for t, j, lv, i, h in scan]
    assert got == _rows(store, 0) and scan.problem is None and scan.last_tick == 90
    assert any(j for _, j, _, _, _ in got) and any(lv for _, _, lv, _, _ in got)
    store.close()
    with sqlite3.connect(tmp_path / "c" / "campaign.sqlite") as con:
        data = bytearray(con.execute("SELECT data FROM journal WHERE tick = 50").fetchone()[0])
        data[12] ^= 0x40
        con.execute("UPDATE journal SET data = ? WHERE tick = 50", (bytes(data),))
        con.execute("DELETE FROM journal WHERE tick = 70")
    s2 = CampaignStore.open(tmp_path, "c")
    try:
        ref = s2.iter_journal(0)
        ref_ticks = [e.tick for e in ref]
        scan = JournalScan(s2, 0)
        assert [r[0] for r in scan] == ref_ticks == list(range(1, 50))
        assert scan.problem == ref.problem and scan.last_tick == ref.last_tick
    finally:
        s2.close()


def test_fast_replay_reaches_the_live_hash(tmp_path: Path) -> None:
    campaign, store, _ = open_campaign(tmp_path, "c", "startales", 4, {})
    journal = Journal(campaign, store, snapshot_every=1000, hash_every=5)
    _play(campaign, 120)
    live = campaign.state_hash()
    assert journal.close()
    s2 = CampaignStore.open(tmp_path, "c")
    try:
        again = Campaign("startales", 4, {}, "c")
        ticks, checked = replay_records(again, JournalScan(s2, 0), verify=True)
        assert ticks == 120 and checked == 24 and again.state_hash() == live
    finally:
        s2.close()
