"""deploy/: the compose file, the Agones manifests, the Prometheus rules and the Grafana dashboard.

Docker and Kubernetes cannot run here, so the files are checked for structure, and every `arbiter`
command in them (`hub`, `host`) goes through the real argparse parser.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import build_parser
from engine.metrics import ProcessMetrics, _Families

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _check_command(argv: list[str], where: str) -> str:
    """Parse `arbiter ARGV` with the real parser; returns how it was checked."""
    parser = build_parser()
    sub = argv[0]
    assert sub in _subcommands(parser), f"{where}: `arbiter {sub}` is not a command"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `arbiter {' '.join(argv)}` is refused by the parser ({exc.code}): {err.getvalue()}")
    return "parsed"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_runs_real_arbiter_commands() -> None:
    compose = _load(DEPLOY / "compose.yaml")
    services: dict[str, Any] = compose["services"]
    assert {"postgres", "redis", "hub", "host-a", "host-b", "prometheus", "grafana"} <= set(services)
    arbiter = {name: s for name, s in services.items() if s.get("image") == "arbiter:latest"}
    assert set(arbiter) == {"hub", "host-a", "host-b"}
    checked = {}
    for name, svc in arbiter.items():
        cmd = svc["command"]
        assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd), f"{name}: command must be a list"
        checked[name] = _check_command(cmd, f"compose {name}")
        assert cmd[0] == ("hub" if name == "hub" else "host"), name
        assert svc["environment"]["ARBITER_PG_DSN"].startswith("postgresql://")
        assert "postgres" in svc["depends_on"]
    # Each host keeps its own data and port; Prometheus scrapes their admin listeners.
    assert services["host-a"]["volumes"] != services["host-b"]["volumes"]
    assert services["host-a"]["ports"] != services["host-b"]["ports"]
    prom = _load(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for host in ("host-a", "host-b"):
        cmd = services[host]["command"]
        assert f"{host}:{cmd[cmd.index('--admin-port') + 1]}" in targets
    assert prom["rule_files"] == ["rules.yml"]
    print("compose commands:", checked)


def test_agones_manifests() -> None:
    fleet = _load(DEPLOY / "agones" / "fleet.yaml")
    assert fleet["kind"] == "Fleet" and fleet["apiVersion"] == "agones.dev/v1"
    gs = fleet["spec"]["template"]["spec"]
    assert gs["lists"]["campaigns"]["capacity"] > 1
    container = gs["template"]["spec"]["containers"][0]
    assert container["args"][0] == "host"
    _check_command(container["args"], "fleet container")
    fas = _load(DEPLOY / "agones" / "fleetautoscaler.yaml")
    assert fas["spec"]["fleetName"] == fleet["metadata"]["name"]
    policy = fas["spec"]["policy"]
    assert policy["type"] == "List" and policy["list"]["key"] == "campaigns"
    assert policy["list"]["minCapacity"] <= policy["list"]["maxCapacity"]
    gsa = _load(DEPLOY / "agones" / "gameserverallocation.yaml")
    assert gsa["kind"] == "GameServerAllocation"
    selectors = gsa["spec"]["selectors"]
    assert [s["gameServerState"] for s in selectors] == ["Allocated", "Ready"]
    assert all(s["lists"]["campaigns"]["minAvailable"] >= 1 for s in selectors)
    assert all(s["matchLabels"]["agones.dev/fleet"] == fleet["metadata"]["name"] for s in selectors)
    assert gsa["spec"]["lists"]["campaigns"]["addValues"]


def _known_samples() -> set[str]:
    names: set[str] = set()
    fams = [*_Families().all(), *ProcessMetrics().registry.collect()]
    for fam in fams:
        base = fam.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(arbiter_[a-z_]+|process_[a-z_]+)\b", expr))


def test_alerts_and_dashboard_use_metrics_that_exist() -> None:
    known = _known_samples()
    rules = _load(DEPLOY / "prometheus" / "rules.yml")
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    # The four: tick p99, overruns, journal lag, write-behind backlog.
    wanted = {"ArbiterTickP99High", "ArbiterTickOverruns", "ArbiterJournalCommitLag", "ArbiterWriteBehindBacklog"}
    assert wanted <= set(alerts)
    for name, rule in alerts.items():
        used = _metric_names(rule["expr"])
        assert used and used <= known, f"alert {name} uses unknown metrics {used - known}"
    dash = json.loads((DEPLOY / "grafana" / "arbiter.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        used = _metric_names(expr)
        assert used <= known, f"dashboard uses unknown metrics {used - known} in {expr}"
