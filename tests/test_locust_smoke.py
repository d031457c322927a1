"""CI smoke of bench/locustfile.py: 10 locust users for 10 s against a live server.

locust runs in its own process (it monkeypatches the standard library with gevent on import, which
must never happen inside the test process or a server).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from engine.tools.launcher import start_server

LOCUSTFILE = Path(__file__).resolve().parent.parent / "bench" / "locustfile.py"


def test_locust_users_join_and_measure_latencies(tmp_path: Path) -> None:
    server = start_server(["--game", "startales", "--data-dir", str(tmp_path / "data"), "--campaign", "lc"])
    try:
        r = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "10", "-r", "10", "-t", "10s",
             "--host", server.url, "--campaign", "lc", "--only-summary", "--csv", str(tmp_path / "lc")],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        with open(tmp_path / "lc_stats.csv") as f:
            rows = {row["Name"]: row for row in csv.DictReader(f)}
    finally:
        assert server.stop() == 0
    join, ack, gap = rows["join"], rows["input_ack"], rows["snapshot_interval"]
    assert int(join["Request Count"]) == 10 and int(join["Failure Count"]) == 0
    assert int(ack["Request Count"]) > 100 and int(ack["Failure Count"]) == 0
    assert float(ack["50%"]) > 0 and float(ack["Max Response Time"]) >= float(ack["50%"])
    assert int(gap["Request Count"]) > 100 and float(gap["50%"]) > 0
    assert "connection" not in rows, rows.get("connection")
