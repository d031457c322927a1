"""The doors of ARCHITECTURE.md for the hub: it never imports sim/ or netcode/ (but the token code's
own needs), and no game server code imports it (`arbiter hub` is registered through the
`arbiter.commands` entry points)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_hub_imports_no_sim_and_no_netcode_of_its_own() -> None:
    for path in (ROOT / "hub").glob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("sim", "netcode")}
        assert not bad, f"{path.name} imports {bad}"
        engine = {m for m in _imports(path) if m.startswith("engine")}
        allowed = {"engine.security.auth", "engine.security.text"}  # the join tokens, the text rules
        assert engine <= allowed, f"{path.name} imports {engine}: only the token code and the text rules"


def test_a_running_hub_loads_no_sim_nor_numba() -> None:
    modules = [f"hub.{p.stem}" for p in (ROOT / "hub").glob("*.py") if p.stem != "__init__"]
    loaded = "sorted(m for m in sys.modules if m.split('.')[0] in ('sim', 'numba'))"
    code = f"import sys; import {', '.join(modules)}; print({loaded})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_servers_never_import_the_hub() -> None:
    for room in ("engine", "netcode", "persistence", "sim"):
        for path in (ROOT / room).rglob("*.py"):
            bad = {m for m in _imports(path) if m.split(".")[0] == "hub"}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_arbiter_hub_is_a_registered_command() -> None:
    from importlib.metadata import entry_points

    from engine.cli import COMMANDS_GROUP, build_parser

    assert "hub" in {ep.name for ep in entry_points(group=COMMANDS_GROUP)}
    args = build_parser().parse_args(["hub", "--port", "0"])
    assert args.port == 0 and args.func.__module__ == "hub.cli"
