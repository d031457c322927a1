"""The browser SDK in headless Chromium: snapshot decode time and render frame time.

    python -m bench.web [--json] [--sends N] [--frames N]

Rows `decode`: the SDK's `ClientSession.receive` of one quantized delta snapshot (wander schema,
every entity moving each send, acked: the steady state of a player) with 50/200/1000 visible
entities, median and p99 over blocks of 10 snapshots (the browser's clock is coarse), after a
warm-up; `full` is the first (all entities enter).
Rows `render`: `Renderer.draw` of 500 and 200 entities on a 1280×720 canvas, and the same with the
raster forced (a 1-pixel read-back after each frame, so the software rasteriser's work counts).
Row `frame200`: decode + render (forced) of 200 entities per frame; the target is ≤ 4 ms.
Needs Debian's Chromium (`apt-get install chromium`); `--json` writes bench/results/web.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from playwright.sync_api import sync_playwright

from netcode.protocol import encode_welcome
from netcode.replication.replicator import Replicator
from netcode.replication.schema import schema_of, schema_to_wire
from sim.games.wander import Wander

WANDER = Wander()
RECORD_DTYPE = WANDER.record_dtype

RESULTS = Path(__file__).resolve().parent / "results" / "web.json"
CHROMIUM = os.environ.get("ARBITER_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
PAGE = "<!doctype html><canvas id=view style='width:1280px;height:720px;display:block'></canvas>"


def delta_frames(visible: int, sends: int, seed: int = 1) -> list[bytes]:
    """A welcome and `sends` acked delta frames of a world of `visible` moving entities."""
    rng = np.random.default_rng(seed)
    schema = schema_of(WANDER.replicated_fields())
    rep = Replicator(schema, visible, 1, radius=None)
    recs = np.zeros(visible, dtype=RECORD_DTYPE)
    recs["id"] = (1 << 20) | np.arange(visible, dtype=np.uint32)
    recs["x"], recs["y"] = rng.uniform(0, 1000, visible), rng.uniform(0, 1000, visible)
    recs["vx"], recs["vy"] = rng.uniform(-5, 5, visible), rng.uniform(-5, 5, visible)
    recs["hp"] = 100
    rep_wire = {"mode": "delta", "schema": schema_to_wire(schema), "aoi": 0.0}
    frames = [encode_welcome(int(recs["id"][0]), 0, 60, 20, "wander", {"width": 1000.0, "height": 1000.0},
                             RECORD_DTYPE, rep_wire)]  # fmt: skip
    ack = 0
    for k in range(1, sends + 1):
        tick = 3 * k
        recs["x"] = np.clip(recs["x"] + recs["vx"] * 0.05, 0, 1000)
        recs["y"] = np.clip(recs["y"] + recs["vy"] * 0.05, 0, 1000)
        rep.begin_send(tick, recs)
        rep.set_viewers([0], [-1])
        frames.append(rep.frame_for(0, ack, k))
        ack = tick
    return frames


DECODE_JS = """async ({frames, render}) => {
  const { ClientSession } = await import("/sdk/session.js");
  const { Renderer } = await import("/sdk/render.js");
  const bytes = frames.map((b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0)));
  const s = new ClientSession();
  const w = s.receive(bytes[0], 0)[0];
  const canvas = document.getElementById("view");
  const r = new Renderer(canvas, w);
  r.resize();
  const cam = r.camera();
  const ctx = canvas.getContext("2d");
  // Browsers coarsen performance.now() (0.1 ms here): time blocks of B snapshots, report per snapshot.
  const B = 10, dec = [], both = [];
  let t = performance.now();
  s.receive(bytes[1], 0);
  const full = performance.now() - t;
  for (let i = 2; i + B <= bytes.length; i += B) {
    const t0 = performance.now();
    for (let j = i; j < i + B; j++) {
      const snap = s.receive(bytes[j], 0)[0];
      if (render) {
        r.styles.update(snap);
        r.draw({ ids: snap.ids, x: snap.fields.x, y: snap.fields.y }, null, cam);
        ctx.getImageData(0, 0, 1, 1);
      }
    }
    (render ? both : dec).push((performance.now() - t0) / B);
  }
  return { dec, both, full };
}"""

RENDER_JS = """async ({n, frames}) => {
  const { Renderer } = await import("/sdk/render.js");
  const w = { player: 0, tickRate: 60, sendRate: 20, game: "bench", world: { width: 1000, height: 1000 },
              dtype: { fields: [], itemsize: 0 }, schema: null, aoi: 0, spec: null, inputs: [] };
  const canvas = document.getElementById("view");
  const r = new Renderer(canvas, w);
  r.resize();
  const ids = new Uint32Array(n), x = new Float64Array(n), y = new Float64Array(n);
  for (let i = 0; i < n; i++) { ids[i] = i + 1; x[i] = Math.random() * 1000; y[i] = Math.random() * 1000; }
  const cam = r.camera();
  const ctx = canvas.getContext("2d");
  const B = 10, draw = [], forced = [];
  for (const force of [false, true]) {
    for (let f = 0; f < frames; f += B) {
      const t0 = performance.now();
      for (let k = 0; k < B; k++) {
        for (let i = 0; i < n; i++) { x[i] += Math.random() - 0.5; y[i] += Math.random() - 0.5; }
        r.draw({ ids, x, y }, { id: 0, x: 500, y: 500 }, cam);
        if (force) ctx.getImageData(0, 0, 1, 1);
      }
      (force ? forced : draw).push((performance.now() - t0) / B);
    }
  }
  return { draw, forced };
}"""


def stats(xs: list[float], skip: int) -> dict[str, float]:
    a = np.asarray(xs[skip:] or xs, dtype=np.float64)
    return {"p50_ms": round(float(np.median(a)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
            "mean_ms": round(float(a.mean()), 4)}  # fmt: skip


def run(sends: int, frames: int) -> list[dict[str, Any]]:
    web = Path(__file__).resolve().parent.parent / "web"
    rows: list[dict[str, Any]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 720})

        def serve(route: Any) -> None:
            path = route.request.url.split("://", 1)[1].split("/", 1)[1]
            if path.startswith("sdk/"):
                route.fulfill(body=(web / path).read_bytes(), content_type="text/javascript")
            else:
                route.fulfill(body=PAGE, content_type="text/html")

        page.route("http://bench.invalid/**", serve)  # the SDK's files, from disk, on one origin
        page.goto("http://bench.invalid/")
        for visible in (50, 200, 1000):
            fr = [base64.b64encode(f).decode() for f in delta_frames(visible, sends)]
            got = page.evaluate(DECODE_JS, {"frames": fr, "render": False})
            size = round(float(np.mean([len(f) for f in fr[2:]])), 1)
            rows.append({"row": "decode", "visible": visible, "full_ms": round(got["full"], 4), **stats(got["dec"], 2),
                         "bytes_mean": size})  # fmt: skip
        for n in (500, 200):
            got = page.evaluate(RENDER_JS, {"n": n, "frames": frames})
            rows.append({"row": "render", "entities": n, **stats(got["draw"], 2),
                         **{f"forced_{k}": v for k, v in stats(got["forced"], 2).items()}})  # fmt: skip
        fr = [base64.b64encode(f).decode() for f in delta_frames(200, sends)]
        got = page.evaluate(DECODE_JS, {"frames": fr, "render": True})
        rows.append({"row": "frame200", "entities": 200, **stats(got["both"], 2), "target_ms": 4.0})
        browser.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sends", type=int, default=200)
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args()
    rows = run(args.sends, args.frames)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        return
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
