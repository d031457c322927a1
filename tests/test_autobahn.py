"""RFC 6455 conformance: the Autobahn|Testsuite fuzzingclient against Arbiter's transport, with the
`websockets` library's own server in the same run for reference (docs/conformance.md).

Autobahn|Testsuite is Python 2 code; `.ci/run` makes its virtualenv (`.autobahn-venv`, or the path
in ARBITER_AUTOBAHN_VENV). Without it the test skips, and fails under ARBITER_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("ARBITER_AUTOBAHN_VENV", ROOT / ".autobahn-venv"))
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.1.*", "9.2.*", "10.*"]
AGENTS = ("arbiter", "websockets")


def _wstest() -> Path:
    exe = VENV / "bin" / "wstest"
    if not exe.exists():
        why = f"Autobahn|Testsuite not installed at {VENV} (bash .ci/run makes it)"
        if os.environ.get("ARBITER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{why} (ARBITER_REQUIRE_SERVICES=1)")
        pytest.skip(why)
    return exe


def _start(which: str, log: Path) -> tuple[subprocess.Popen[str], int]:
    # stderr to a file: a pipe nobody reads would stall a server that logs much (websockets does).
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.autobahn_echo", which],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise AssertionError(f"{which} echo server did not start: {line!r} {log.read_text()[-2000:]}")
    return proc, int(line.split()[1])


def summarize(index: dict[str, dict[str, dict[str, object]]]) -> dict[str, dict[str, int]]:
    """Per agent: how many cases ended in each behavior (OK, NON-STRICT, INFORMATIONAL, FAILED...)."""
    out: dict[str, dict[str, int]] = {}
    for agent, cases in index.items():
        counts = Counter(str(c["behavior"]) for c in cases.values())
        counts["cases"] = len(cases)
        out[agent] = dict(sorted(counts.items()))
    return out


def test_fuzzingclient_finds_no_failure(tmp_path: Path) -> None:
    wstest = _wstest()
    servers = [_start(which, tmp_path / f"{which}.log") for which in AGENTS]
    try:
        spec = {
            "outdir": str(tmp_path / "reports"),
            "servers": [
                {"agent": a, "url": f"ws://127.0.0.1:{port}"} for a, (_, port) in zip(AGENTS, servers, strict=True)
            ],
            "cases": CASES,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        t0 = time.monotonic()
        run = subprocess.run(
            [str(wstest), "-m", "fuzzingclient", "-s", "spec.json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.monotonic() - t0
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.communicate(timeout=10)
    errors = {which: (tmp_path / f"{which}.log").read_text() for which in AGENTS}
    index = json.loads((tmp_path / "reports" / "index.json").read_text())
    summary = summarize(index)
    report = {"seconds": round(seconds, 1), "summary": summary}
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "autobahn.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    ours = index["arbiter"]
    failed = sorted((k for k, c in ours.items() if c["behavior"] == "FAILED" or c["behaviorClose"] == "FAILED"))
    assert not failed, f"Autobahn cases FAILED: {failed}"
    assert "BUG" not in errors["arbiter"], errors["arbiter"][-3000:]
    assert summary["arbiter"]["cases"] == summary["websockets"]["cases"] > 250
    assert summary["arbiter"].get("OK", 0) >= summary["websockets"].get("OK", 0), summary
