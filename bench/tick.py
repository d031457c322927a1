"""Sim tick cost and movement-kernel speed-up (numba vs the numpy reference).

    python -m bench.tick [--json] [--ticks N]

Rows: full `game.step` for startales (scaling drones) and wander (scaling NPCs) at 1k/10k/100k
entities with 64 players sending an input every tick; and each game's movement alone (NPC drift
plus the players' move rule: thrust for startales, velocity for wander), numba vs the numpy
references of `tests/reference.py`, measured in the same run. `--json` prints one JSON object per row and writes
them to bench/results/tick.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim.movement import drift, move_thrust, move_velocity
from sim.registry import make_game
from tests.reference import drift_ref, move_thrust_ref, move_velocity_ref

SIZES = (1_000, 10_000, 100_000)
PLAYERS = 64
PLANETS = 48
RESULTS = Path(__file__).resolve().parent / "results" / "tick.json"


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def _time(fn: Callable[[], None], reps: int, warm: int = 10) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def bench_tick(name: str, entities: int, ticks: int) -> dict[str, object]:
    if name == "startales":
        cfg = {"planets": PLANETS, "drones": entities - PLANETS - PLAYERS, "max_players": PLAYERS}
    else:
        cfg = {"npcs": entities - PLAYERS, "max_players": PLAYERS}
    game = make_game(name, cfg)
    game.warmup()
    world = game.create_world(42)
    eids = np.array([game.join(world) for _ in range(PLAYERS)], dtype=np.uint32)
    rng = np.random.default_rng(0)
    inputs, events = game.input_batch(PLAYERS), game.event_buffer(8 * PLAYERS)
    samples: list[float] = []
    for t in range(ticks + 20):
        ang = rng.uniform(0, 2 * np.pi, PLAYERS)
        inputs.n = PLAYERS
        inputs.eid[:] = eids
        inputs.seq[:] = t + 1
        inputs.dx[:] = (0.7 * np.cos(ang)).astype(np.float32)
        inputs.dy[:] = (0.7 * np.sin(ang)).astype(np.float32)
        if name == "startales":
            inputs.action[:] = rng.choice([0, 0, 0, 1, 2, 3], PLAYERS)
        events.clear()
        t0 = time.perf_counter_ns()
        game.step(world, inputs, events)
        dt = (time.perf_counter_ns() - t0) / 1e6
        inputs.clear()
        if t >= 20:
            samples.append(dt)
    return {
        "game": name,
        "entities": int(np.count_nonzero(world.arrays["alive"])),
        "numba_ms_p50": round(_pct(samples, 50), 4),
        "numba_ms_p99": round(_pct(samples, 99), 4),
        "numpy_ms_p50": None,
        "ratio": None,
    }


def _move_state(n: int) -> dict[str, np.ndarray]:
    """n entities, the last 1 % of them players (as games lay them out), in a 4000 u world."""
    r = np.random.default_rng(1)
    f = np.float32
    return {
        "x": r.uniform(0, 4000, n).astype(f),
        "y": r.uniform(0, 4000, n).astype(f),
        "vx": r.uniform(-40, 40, n).astype(f),
        "vy": r.uniform(-40, 40, n).astype(f),
        "tx": r.uniform(-0.7, 0.7, n).astype(f),
        "ty": r.uniform(-0.7, 0.7, n).astype(f),
        "alive": np.ones(n, np.uint8),
    }


def bench_move(name: str, n: int, reps: int) -> dict[str, object]:
    s = _move_state(n)
    f = np.float32
    lo, dt, bounds = n - n // 100, f(1 / 60), np.array([0, 0, 4000, 4000], dtype=f)
    drift_args: tuple[Any, ...] = (s["x"], s["y"], s["vx"], s["vy"], s["alive"], 0, lo, dt, f(4000), f(4000))
    move: Any
    move_ref: Any
    if name == "wander_move":
        move_args: tuple[Any, ...] = (s["x"], s["y"], s["vx"], s["vy"], s["alive"], lo, dt, bounds)
        move, move_ref = move_velocity, move_velocity_ref
    else:
        move_args = (s["x"], s["y"], s["vx"], s["vy"], s["tx"], s["ty"], s["alive"], lo, dt, bounds, f(200), f(300))
        move, move_ref = move_thrust, move_thrust_ref

    def fast() -> None:
        drift(*drift_args)
        move(*move_args)

    def ref() -> None:
        drift_ref(*drift_args)
        move_ref(*move_args)

    nb = _time(fast, reps)
    npy = _time(ref, reps)
    p50_nb, p50_np = _pct(nb, 50), _pct(npy, 50)
    return {
        "game": name,
        "entities": n,
        "numba_ms_p50": round(p50_nb, 4),
        "numba_ms_p99": round(_pct(nb, 99), 4),
        "numpy_ms_p50": round(p50_np, 4),
        "ratio": round(p50_np / p50_nb, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="one JSON object per row; also bench/results/tick.json")
    ap.add_argument("--ticks", type=int, default=300, help="timed ticks per row (>= 200)")
    args = ap.parse_args(argv)
    ticks = max(200, args.ticks)
    rows = [bench_tick(g, n, ticks) for g in ("startales", "wander") for n in SIZES]
    rows += [bench_move(m, n, ticks) for m in ("startales_move", "wander_move") for n in SIZES]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    else:
        head = f"{'game':<15} {'entities':>9} {'numba p50':>10} {'numba p99':>10} {'numpy p50':>10} {'ratio':>7}"
        print(head)
        print("-" * len(head))
        for r in rows:
            npy = "-" if r["numpy_ms_p50"] is None else f"{r['numpy_ms_p50']:.4f}"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.1f}x"
            print(
                f"{r['game']:<15} {r['entities']:>9} {r['numba_ms_p50']:>10.4f} {r['numba_ms_p99']:>10.4f}"
                f" {npy:>10} {ratio:>7}"
            )
        print("(ms per call; tick rows time game.step with 64 players sending an input every tick)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
