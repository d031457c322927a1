"""bench.webrtc's worker-link section in small: every record written by the tick side is read back
whole by a worker-side reader in another process."""

from __future__ import annotations

from bench.webrtc import bench_ipc


def test_worker_link_bench_delivers_every_record() -> None:
    r = bench_ipc(records=5_000, batch=50, size=64)
    assert r["received"] == 5_000
    assert r["tick_side_us_per_record"] > 0 and r["worker_side_us_per_record"] > 0
