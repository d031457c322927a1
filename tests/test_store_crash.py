"""kill -9 mid-stream: every tick reported as committed must survive, intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from persistence.journal_codec import encode_tick
from tests.worlds import open_store
from tests.worlds import startales_inputs as make_inputs

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from persistence.campaign_store import CampaignStore
    from tests.test_store_crash import tick_blob, snapshot_bytes

    def on_commit(tick):
        print(tick, flush=True)

    store = CampaignStore.open({data_dir!r}, "crash", durability={durability!r}, on_commit=on_commit)
    tick = 1
    while True:
        if store.append_journal(tick, tick_blob(tick), tick if tick % 10 == 0 else None):
            if tick % 50 == 0:
                store.put_snapshot(tick, tick, snapshot_bytes(tick))
            tick += 1
        else:
            time.sleep(0.001)
        if tick % 20 == 0:
            time.sleep(0.0005)
    """
)


def tick_blob(tick: int) -> bytes:
    n = tick % 9
    inputs = make_inputs(n)
    inputs["eid"] = tick
    inputs["seq"] = range(n)
    inputs["dx"] = 0.25
    joins = [(tick, f"p{tick}-é")] if tick % 13 == 0 else []
    return encode_tick(tick, joins, [tick - 1] if tick % 17 == 0 else [], inputs)


def snapshot_bytes(tick: int) -> bytes:
    return (b"%d;" % tick) * 5000


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_sigkill_keeps_every_committed_tick(tmp_path: Path, durability: str) -> None:
    code = CHILD.format(root=str(ROOT), data_dir=str(tmp_path), durability=durability)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    printed: list[int] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while len(printed) < 40:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child exited early: {child.stderr.read().decode() if child.stderr else ''}")
            printed.append(int(line))
            assert time.monotonic() < deadline
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        # Lines the child managed to write before dying are promises too.
        printed += [int(x) for x in child.stdout.read().split()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert printed == sorted(printed)
    last_promised = printed[-1]

    store = open_store(tmp_path, "crash")
    try:
        report = store.repair_tail()
        assert report.last_good_tick is not None and report.last_good_tick >= last_promised
        reader = store.iter_journal(0)
        ticks = []
        for entry in reader:
            assert encode_tick(entry.tick, entry.record.joins, entry.record.leaves, entry.record.inputs) == (
                tick_blob(entry.tick)
            )
            assert entry.state_hash == (f"{entry.tick:016x}" if entry.tick % 10 == 0 else None)
            ticks.append(entry.tick)
        assert reader.problem is None
        assert ticks[:last_promised] == list(range(1, last_promised + 1))
        snap = store.latest_snapshot()
        if snap is not None:
            assert snap.data == snapshot_bytes(snap.tick)
            assert snap.tick <= ticks[-1]
        # The store is usable again, right after the last good tick.
        assert store.append_journal(ticks[-1] + 1, tick_blob(ticks[-1] + 1))
        assert store.flush(10)
    finally:
        store.close()
