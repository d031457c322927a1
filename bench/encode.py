"""Per-client delta encode cost for 50/100/200 visible entities, plus the batched AOI query.

    python -m bench.encode [--json] [--sends N]

Rows `encode`: one client's `Replicator.encode_for` (Python call + numba kernel + bytes copy)
against the previous snapshot (acked), every entity moving each send like wander NPCs at 20 Hz;
the client sees exactly `visible` entities (AOI off, world of that size). `group µs` is the path
the server runs: `encode_group(..., ws=True)` for all 50 clients in one call, framed for the
socket, divided by 50. Rows `aoi`: one
`set_viewers`-sized query for 1000 viewers over 2000 entities (radius 100 in 1000x1000), the one
the server runs, and one grid build with its cell ordering.
`--json` prints one object per row and writes bench/results/encode.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from netcode.replication.frames import encode_delta_frame
from netcode.replication.replicator import Replicator
from netcode.replication.schema import schema_of
from netcode.replication.warm import warmup as rep_warmup
from sim.aoi import AoiGrid
from sim.games.wander import Wander

WANDER = Wander()
RECORD_DTYPE = WANDER.record_dtype

RESULTS = Path(__file__).resolve().parent / "results" / "encode.json"


def _world(n: int, rng: np.random.Generator, size: float) -> np.ndarray:
    recs = np.zeros(n, dtype=RECORD_DTYPE)
    recs["id"] = (1 << 20) | np.arange(n, dtype=np.uint32)
    recs["x"] = rng.uniform(0, size, n)
    recs["y"] = rng.uniform(0, size, n)
    h = rng.uniform(0, 2 * np.pi, n)
    recs["vx"], recs["vy"] = 5 * np.cos(h), 5 * np.sin(h)
    recs["hp"] = 100
    return recs


def bench_encode(visible: int, sends: int, clients: int = 50) -> dict[str, object]:
    rng = np.random.default_rng(visible)
    recs = _world(visible, rng, 1000.0)
    rep = Replicator(schema_of(WANDER.replicated_fields()), visible, clients)
    acks = np.zeros(clients, dtype=np.int64)
    samples: list[float] = []
    frame_ns: list[float] = []
    group_us: list[float] = []
    everyone = np.arange(clients, dtype=np.int64)
    zeros = np.zeros(clients, dtype=np.int64)
    size = 0
    for tick in range(1, sends + 1):
        recs["x"] = np.clip(recs["x"] + recs["vx"] / 20, 0, 1000)
        recs["y"] = np.clip(recs["y"] + recs["vy"] / 20, 0, 1000)
        rep.begin_send(tick, recs)
        for c in range(clients):
            t0 = time.perf_counter_ns()
            p = rep.encode_for(c, int(acks[c]))
            t1 = time.perf_counter_ns()
            encode_delta_frame(p.tick, p.baseline, 1234, p.body)
            t2 = time.perf_counter_ns()
            if tick > 5:
                samples.append((t1 - t0) / 1e3)
                frame_ns.append((t2 - t1) / 1e3)
                size += len(p.body)
        # The server's path: the whole group in one call, framed for the socket (a second encode of
        # the same send against the same baselines: the same work, per client amortized).
        t0 = time.perf_counter_ns()
        rep.encode_group(everyone, acks, zeros, None, ws=True)
        if tick > 5:
            group_us.append((time.perf_counter_ns() - t0) / 1e3 / clients)
        acks[:] = tick
    a = np.asarray(samples)
    return {
        "row": "encode",
        "visible": visible,
        "encode_us_p50": round(float(np.percentile(a, 50)), 2),
        "encode_us_p99": round(float(np.percentile(a, 99)), 2),
        "encode_us_mean": round(float(a.mean()), 2),
        "msgpack_frame_us_mean": round(float(np.mean(frame_ns)), 2),
        "group_us_per_client_p50": round(float(np.median(group_us)), 2),
        "body_bytes_mean": round(size / len(samples), 1),
    }


def bench_aoi(viewers: int, entities: int, reps: int) -> dict[str, object]:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1000, entities), rng.uniform(0, 1000, entities)
    alive = np.ones(entities, dtype=np.uint8)
    g = AoiGrid(entities, (0.0, 0.0, 1000.0, 1000.0), 100.0)
    own = rng.choice(entities, viewers, replace=False)
    ids = (np.uint32(1 << 20) | np.arange(entities, dtype=np.uint32)).astype(np.uint32)
    build, query = [], []
    total = 0
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        g.build(x, y, alive)
        g.order(ids)  # once per send, like the replicator
        t1 = time.perf_counter_ns()
        offsets, _ = g.query(x[own], y[own], 100.0, ids[own])
        t2 = time.perf_counter_ns()
        build.append((t1 - t0) / 1e3)
        query.append((t2 - t1) / 1e3)
        total = int(offsets[-1])
    return {
        "row": "aoi",
        "viewers": viewers,
        "entities": entities,
        "radius": 100.0,
        "grid_build_us_p50": round(float(np.median(build)), 1),
        "query_all_viewers_us_p50": round(float(np.median(query)), 1),
        "mean_visible": round(total / viewers, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sends", type=int, default=60)
    args = ap.parse_args()
    rep_warmup()
    rows = [bench_encode(v, args.sends) for v in (50, 100, 200)]
    rows.append(bench_aoi(1000, 2000, 50))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        return
    print(f"{'visible':>8}{'p50 µs':>9}{'p99 µs':>9}{'mean µs':>9}{'frame µs':>10}{'group µs':>10}{'body B':>8}")
    for r in rows[:-1]:
        print(
            f"{r['visible']:>8}{r['encode_us_p50']:>9}{r['encode_us_p99']:>9}{r['encode_us_mean']:>9}"
            f"{r['msgpack_frame_us_mean']:>10}{r['group_us_per_client_p50']:>10}{r['body_bytes_mean']:>8}"
        )
    a = rows[-1]
    print(
        f"AOI: {a['viewers']} viewers x {a['entities']} entities, r=100: build {a['grid_build_us_p50']} µs, "
        f"query {a['query_all_viewers_us_p50']} µs, {a['mean_visible']} visible/viewer"
    )


if __name__ == "__main__":
    main()
