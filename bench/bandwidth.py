"""Snapshot bandwidth per client on `wander`: full world raw vs delta+quantized vs AOI+delta.

    python -m bench.bandwidth [--json] [--clients 200] [--npcs 1000] [--seconds 10] [--radius 100]

Headless (no sockets): the real `wander` game at 60 Hz ticks with N players driven by its bot
brain (sim/games/wander.py WanderBrain, an input every 3 ticks = 20 Hz), snapshots at 20 Hz. Every client
acknowledges every snapshot it receives before the next send; the run is repeated with 5 %
independent loss per (client, snapshot). Modes:

- full_raw: the frame engine/server.py sends today (msgpack map + the whole world as 21-byte records);
- full_delta: whole world, quantized, delta against the acknowledged baseline (netcode.replication);
- aoi_delta: AOI (radius 100 u) + quantized delta;
- aoi_delta_budget: aoi_delta with a per-snapshot byte budget (priority accumulators).

Bytes are whole msgpack frames (WebSocket framing, 2-4 bytes per message, not counted).
bits_per_entity_update = 8 x (bytes of update items) / (entity updates) for the delta modes,
8 x 21 for full_raw. `--json` prints one object per (mode, loss) and writes
bench/results/bandwidth.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from netcode.protocol import PreparedSnapshot
from netcode.replication.frames import encode_delta_frame
from netcode.replication.replicator import Replicator
from netcode.replication.schema import schema_of
from netcode.replication.warm import warmup as rep_warmup
from sim.entities import SLOT_MASK
from sim.games.wander import WanderBrain
from sim.registry import make_game

RESULTS = Path(__file__).resolve().parent / "results" / "bandwidth.json"
TICK_RATE = 60
SEND_EVERY = 3  # 20 Hz
BUDGET = 120  # bytes per snapshot body for aoi_delta_budget (2.4 KB/s at 20 Hz: makes the budget bite)


def run(clients: int, npcs: int, seconds: float, radius: float, loss: float, seed: int) -> list[dict[str, object]]:
    game = make_game("wander", {"npcs": npcs, "max_players": clients, "tick_rate": TICK_RATE})
    world = game.create_world(seed)
    eids = np.array([game.join(world) for _ in range(clients)], dtype=np.int64)
    own = eids & SLOT_MASK
    rng = np.random.default_rng(seed)
    brain = WanderBrain(clients, rng, game.welcome_constants(), game.wire_spec())
    brain.illegal = 0.0
    seqs = np.zeros(clients, dtype=np.int64)
    inputs, events = game.input_batch(clients), game.event_buffer(4 * clients)
    records = np.zeros(game.capacity, dtype=game.record_dtype)
    schema = schema_of(game.replicated_fields())
    reps = {
        "full_delta": (Replicator(schema, game.capacity, clients), None),
        "aoi_delta": (Replicator(schema, game.capacity, clients, radius=radius), None),
        "aoi_delta_budget": (Replicator(schema, game.capacity, clients, radius=radius), BUDGET),
    }
    modes = ["full_raw", *reps]
    acks = {m: np.zeros(clients, dtype=np.int64) for m in reps}
    total = dict.fromkeys(modes, 0)
    upd_bytes = dict.fromkeys(modes, 0)
    updates = dict.fromkeys(modes, 0)
    enc_ns = dict.fromkeys(modes, 0)
    max_body = dict.fromkeys(modes, 0)
    deferred = dict.fromkeys(modes, 0)
    visible = 0
    ticks = round(seconds * TICK_RATE)
    sends = 0
    loss_rng = np.random.default_rng(seed + 1)
    for tick in range(1, ticks + 1):
        for i in range(clients):
            if (i + tick) % 3 == 0:
                move = brain.next_input(i, None)
                seqs[i] += 1
                inputs.add(int(eids[i]), int(seqs[i]), tick, move["dx"], move["dy"])
        events.clear()
        game.step(world, inputs, events)
        inputs.clear()
        if tick % SEND_EVERY:
            continue
        sends += 1
        n = game.replicate(world, records)
        recs = records[:n]
        last_seq = world.arrays["last_seq"]
        lost = loss_rng.random(clients) < loss
        t0 = time.perf_counter_ns()
        prep = PreparedSnapshot(tick, recs)
        for c in range(clients):
            total["full_raw"] += len(prep.frame(int(last_seq[own[c]])))
        enc_ns["full_raw"] += time.perf_counter_ns() - t0
        updates["full_raw"] += clients * n
        upd_bytes["full_raw"] += clients * n * recs.dtype.itemsize
        for mode, (rep, budget) in reps.items():
            t0 = time.perf_counter_ns()
            rep.begin_send(tick, recs)
            rep.set_viewers(np.arange(clients), own)
            ack = acks[mode]
            for c in range(clients):
                p = rep.encode_for(c, int(ack[c]), budget)
                frame = encode_delta_frame(p.tick, p.baseline, int(last_seq[own[c]]), p.body)
                total[mode] += len(frame)
                upd_bytes[mode] += p.update_bytes
                updates[mode] += p.updates
                deferred[mode] += p.deferred
                max_body[mode] = max(max_body[mode], len(p.body))
                if mode == "aoi_delta":
                    visible += len(rep.visible_ids(c))
                if not lost[c]:
                    ack[c] = tick
            enc_ns[mode] += time.perf_counter_ns() - t0
    sim_s = ticks / TICK_RATE
    rows = []
    for mode in modes:
        rows.append(
            {
                "mode": mode,
                "clients": clients,
                "loss": loss,
                "bytes_per_client_s": round(total[mode] / clients / sim_s, 1),
                "bits_per_entity_update": round(8 * upd_bytes[mode] / max(1, updates[mode]), 2),
                "entity_updates_per_client_s": round(updates[mode] / clients / sim_s, 1),
                "encode_us_per_client": round(enc_ns[mode] / 1e3 / (sends * clients), 2),
                "max_body_bytes": max_body[mode] if mode in reps else None,
                "deferred_per_client_s": round(deferred[mode] / clients / sim_s, 1),
                "budget": reps[mode][1] if mode in reps else None,
                "aoi_radius": radius if mode.startswith("aoi") else None,
                "mean_visible": round(visible / (sends * clients), 1) if mode.startswith("aoi") else n,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--npcs", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--radius", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    rep_warmup()
    make_game("wander").warmup()
    rows: list[dict[str, object]] = []
    for loss in (0.0, 0.05):
        rows += run(args.clients, args.npcs, args.seconds, args.radius, loss, args.seed)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        return
    print(f"wander, {args.npcs} NPCs, {args.clients} clients, {args.seconds:g} s at 60 Hz ticks / 20 Hz sends")
    print(f"{'mode':<18}{'loss':>6}{'B/client/s':>13}{'bits/upd':>10}{'upd/cl/s':>10}{'enc µs/cl':>11}{'visible':>9}")
    for r in rows:
        print(
            f"{r['mode']:<18}{r['loss']:>6}{r['bytes_per_client_s']:>13,}{r['bits_per_entity_update']:>10}"
            f"{r['entity_updates_per_client_s']:>10}{r['encode_us_per_client']:>11}{r['mean_visible']:>9}"
        )


if __name__ == "__main__":
    main()
