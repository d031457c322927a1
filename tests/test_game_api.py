"""The game API: a fourth game written inline and played end to end, what the engine derives from a
declaration, the registry, the generic bot brain, and an engine that names no game."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numba import njit

from engine.cli import build_parser
from engine.cli import main as cli_main
from netcode.client import ArbiterClient
from sim.brain import Brain
from sim.entities import make_id
from sim.events import emit
from sim.game_api import Game
from sim.registry import game_class, game_names, register
from sim.spec import MOVE_PLAYERS, Component, Fixed, Input, Player, Velocity
from tests.serverutil import running_server, url, wait_for

ROOT = Path(__file__).resolve().parents[1]


# -- a fourth game, in 30 lines -------------------------------------------------------------------
@njit(cache=True)
def laps(x: np.ndarray, alive: np.ndarray, generation: np.ndarray, is_player: np.ndarray, score: np.ndarray,
         ev: Any, player_lo: int, width: np.float32) -> None:  # fmt: skip
    """A dot that reaches the east edge scores a lap and starts again from the west."""
    for s in range(player_lo, x.shape[0]):
        if alive[s] and is_player[s] and x[s] >= width:
            x[s] = 0.0
            score[s - player_lo] += 1
            emit(ev, 4, make_id(s, generation[s]), score[s - player_lo], 0)


class Laps(Game):
    name = "laps"
    components = (
        Component("x", "f4", replicate=Fixed(0, "width", 1 / 16)),
        Component("y", "f4", replicate=Fixed(0, "height", 1 / 16)),
        Component("vx", "f4"),
        Component("vy", "f4"),
    )
    players = (Player("score", "i4"),)
    inputs = (Input("dx"), Input("dy"))
    constants = {"width": 100.0, "height": 100.0, "speed": 150.0}
    move = Velocity(("dx", "dy"), speed="speed")
    systems = (MOVE_PLAYERS, laps)
    events = {4: "lap"}
    durable = ("score",)


# -------------------------------------------------------------------------------------------------


async def test_a_game_in_thirty_lines_plays_over_a_socket_and_replays_bit_for_bit(tmp_path: Path) -> None:
    register(Laps)
    async with running_server(game="laps", data_dir=str(tmp_path), campaign="c") as server:
        client = await ArbiterClient.connect(url(server), "ada")
        assert client.welcome is not None and client.welcome.game == "laps"
        spec = client.welcome.spec
        assert spec["inputs"] == [["dx", "f32", -1.0, 1.0], ["dy", "f32", -1.0, 1.0]]
        assert spec["events"]["4"] == "lap" and spec["move"]["rule"] == "velocity"
        assert client.welcome.dtype.names == ("id", "x", "y")

        def laps_seen() -> list[tuple[int, int, int]]:
            return [e for e in client.events if e[0] == 4]

        client.send_input(1.0, 0.0)  # full speed east, held: a lap every 2/3 s
        await wait_for(lambda: len(laps_seen()) >= 2, 10)
        assert [e[1] for e in laps_seen()[:2]] == [1, 2]
        snap = await client.next_snapshot()
        me = snap.entities[snap.entities["id"] == client.player]
        assert me.size == 1 and 0.0 <= float(me["x"][0]) <= 100.0
        await client.close()
    # The journal replays to every recorded state hash (in this process: the game is registered here).
    code = cli_main(["replay", str(tmp_path), "--verify", "--json"])
    assert code == 0


def test_everything_is_derived_from_the_declaration() -> None:
    g = Laps({"max_players": 3})
    assert g.record_dtype.names == ("id", "x", "y")  # the replicated components
    assert g.input_batch(4).dtype.names == ("eid", "seq", "client_tick", "dx", "dy", "bound")
    assert g.replicated_fields() == [("x", "fixed", 0.0, 100.0, 1 / 16), ("y", "fixed", 0.0, 100.0, 1 / 16)]
    assert g.capacity == 3 and g.player_lo == 0
    w = g.create_world(5)
    assert {"x", "y", "vx", "vy", "score", "alive", "generation", "is_player", "last_seq", "fp_pace"} <= set(w.arrays)
    assert w.arrays["score"].shape == (3,)
    assert g.welcome_constants() == {"width": 100.0, "height": 100.0, "speed": 150.0, "max_players": 3, "tick_rate": 60}


def test_bad_declarations_are_refused_with_a_reason() -> None:
    class Clash(Laps):
        name = "clash"
        players = (Player("x", "i4"),)

    with pytest.raises(ValueError, match="field name 'x'"):
        Clash()

    class NoVelocity(Laps):
        name = "novel"
        components = (Component("x", "f4"), Component("y", "f4"))  # type: ignore[assignment]

    with pytest.raises(ValueError, match="needs components"):
        NoVelocity()

    class Typo(Laps):
        name = "typo"

        systems = (njit(lambda x, widht: None),)  # type: ignore[assignment]

    with pytest.raises(ValueError, match="'widht'"):
        Typo().step(*_batch(Typo()))
    with pytest.raises(ValueError, match="outside"):
        Laps({"max_players": 0})


def _batch(g: Game) -> tuple[Any, Any, Any]:
    return g.create_world(1), g.input_batch(1), g.event_buffer(4)


def test_the_built_in_games_are_entry_points_and_the_cli_offers_them() -> None:
    register(Laps)
    assert {"startales", "wander", "arena"} <= set(game_names())
    assert game_class("arena").__module__ == "sim.games.arena"
    sub: Any = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    serve = next(a for a in sub.choices["serve"]._actions if a.dest == "game")
    assert {"startales", "wander", "arena", "laps"} <= set(serve.choices or ())
    with pytest.raises(ValueError, match="unknown game 'chess'; known: "):
        game_class("chess")


def test_the_generic_brain_sends_legal_random_inputs_from_the_spec() -> None:
    spec = {
        "inputs": [["dx", "f32", -1.0, 1.0], ["dy", "f32", -1.0, 1.0], ["power", "f32", 0.5, 2.0], ["a", "i32", 0, 9]],
        "move": {"rule": "thrust", "in": ["dx", "dy"]},
    }
    brain = Brain(4, np.random.default_rng(1), {}, spec)
    headings = set()
    for _ in range(200):
        for i in range(4):
            v = brain.next_input(i, None)
            assert set(v) == {"dx", "dy", "power"}  # integer inputs (actions) stay at their default
            assert np.hypot(v["dx"], v["dy"]) <= 1.0 and 0.5 <= v["power"] <= 2.0
            headings.add(round(float(np.arctan2(v["dy"], v["dx"])), 1))
    assert len(headings) > 20  # it wanders


def test_no_engine_code_names_a_game() -> None:
    """Outside sim/games/, the engine, netcode and persistence name no game, except in the CLI's
    flag defaults (ARCHITECTURE.md: everything game-specific comes from the game's declaration)."""
    out = subprocess.run(
        ["grep", "-rnE", '"(startales|wander|arena)"', "engine", "netcode", "persistence"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    hits = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert all(re.match(r"engine/cli\.py:\d+:.*add_argument\(\"--game\", default=", ln) for ln in hits), hits


def test_replay_of_an_old_campaign_is_refused_naming_the_format(tmp_path: Path) -> None:
    from persistence.campaign_store import CampaignStore

    store = CampaignStore.open(tmp_path, "old")
    store.set_meta({"game": "startales", "seed": "1", "config": "{}", "campaign": "old", "tick_rate": "60"})
    store.close()
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(tmp_path), "--verify"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "journal format 1-2" in lines[0] and "Traceback" not in out.stderr
    for path in (tmp_path / "nothing-here", tmp_path / "old" / "campaign.sqlite-wal-not"):
        bad = subprocess.run(
            [sys.executable, "-m", "engine.cli", "replay", str(path)],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "Traceback" not in bad.stderr
