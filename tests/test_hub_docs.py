"""docs/hub.md's walkthrough runs as written: its `sh` blocks, in order, in one bash, against a fresh
database and a fresh Redis prefix (the only things the test chooses, through the variables the
walkthrough reads)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hubutil import REDIS_URL, free_port, redis_prefix
from tests.pgutil import dsn, fresh_database

DOC = Path(__file__).resolve().parent.parent / "docs" / "hub.md"


def walkthrough() -> str:
    text = DOC.read_text()
    section = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 8
    return "\n".join(blocks)


async def test_the_walkthrough_runs(tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            if os.environ.get("ARBITER_REQUIRE_SERVICES") == "1":
                pytest.fail(f"{tool} is needed by docs/hub.md (ARBITER_REQUIRE_SERVICES=1)")
            pytest.skip(f"{tool} is not installed")
    async with fresh_database() as db, redis_prefix() as prefix:
        script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + walkthrough()
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ARBITER_JWT_SECRET": secrets.token_urlsafe(48),
            "ARBITER_PG_DSN": dsn(db),
            "ARBITER_REDIS_URL": REDIS_URL,
            "ARBITER_REDIS_PREFIX": prefix,
            "HUB_PORT": str(free_port()),
            "DATA": str(tmp_path / "data"),
        }
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        text = out.decode(errors="replace")
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
        assert proc.returncode == 0, text[-4000:] + logs
        # What the walkthrough shows actually happened.
        assert '"status":"friends"' in text
        assert re.search(r'"handle":"ada","text":"glhf!"', text)
        assert '"handle":"bob","text":"thanks, you too"' in text
        assert len(re.findall(r"played to tick \d+", text)) == 2
        assert re.search(r'"handle":"bob","status":"in_campaign","campaign":"c_', text)
        assert text.count('"rank":') >= 3
        assert re.search(r"^401\n401\n204$", text, re.M), text[-500:]
