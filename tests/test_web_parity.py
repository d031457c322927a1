"""Decoder and predictor parity between the Python reference and the browser SDK, in Chromium.

Property test: the Python encoder makes random welcomes, raw snapshots (every record format) and
quantized delta snapshots under loss, reordering and stale or lost acks (plus corrupted bodies),
events, errors and pongs; the browser SDK (web/sdk/session.js) decodes the same bytes in Chromium;
the Python SDK (netcode/client_session.py) decodes them too; both sides must agree exactly.
The JavaScript predictor is checked the same way against netcode.prediction.ShipPredictor.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page

from netcode.client_session import ClientSession, Snapshot
from netcode.prediction import ShipPredictor
from netcode.protocol import ProtocolError, encode_error, encode_events, encode_pong, encode_snapshot, encode_welcome
from netcode.replication.frames import encode_delta_frame
from netcode.replication.replicator import Replicator
from netcode.replication.schema import Quant, ReplicationSchema, schema_to_wire
from tests.browserutil import ThreadServer, new_page

FORMATS = ["<i2", "<i4", "<i8", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8", "|i1", "|u1", "|b1"]
PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DECODE_JS = """async (frames) => {
  const { ClientSession } = await import("/web/sdk/session.js");
  const s = new ClientSession();
  const num = (x) => typeof x === "bigint" ? x.toString() : Number.isNaN(x) ? "NaN"
    : x === Infinity ? "inf" : x === -Infinity ? "-inf" : x;
  return frames.map((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    let evs;
    try { evs = s.receive(bytes, 100); } catch (e) { return [{ type: "raise", code: e.code ?? -1 }]; }
    return evs.map((e) => {
      if (e.type !== "snapshot") return { type: e.type, code: e.code, msg: e.msg };
      const fields = {};
      for (const [k, v] of Object.entries(e.fields)) fields[k] = Array.from(v, num);
      const q = e.q ? Array.from(e.q) : null;
      return { type: "snapshot", tick: e.tick, ack: e.ackSeq, ids: Array.from(e.ids), q, fields };
    });
  });
}"""


@pytest.fixture(scope="module")
def sdk_server() -> Iterator[ThreadServer]:
    s = ThreadServer(game="wander", game_config={"npcs": 10})
    yield s
    s.stop()


@pytest.fixture
def sdk_page(browser: Browser, sdk_server: ThreadServer) -> Iterator[Page]:
    page = new_page(browser)
    page.goto(f"{sdk_server.http}/web/config.json")  # any page of the origin the SDK is served from
    yield page
    page.context.close()


def num(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return "NaN" if math.isnan(x) else "inf" if x == math.inf else "-inf" if x == -math.inf else float(x)
    if isinstance(x, np.integer) and x.dtype.itemsize == 8:
        return str(int(x))
    return x.item() if isinstance(x, np.generic) else x


def py_decode(frames: list[bytes]) -> list[list[dict[str, Any]]]:
    s = ClientSession()
    out: list[list[dict[str, Any]]] = []
    for f in frames:
        try:
            evs = s.receive(f, 100.0)
        except ProtocolError as err:
            out.append([{"type": "raise", "code": int(err.code)}])
            continue
        row: list[dict[str, Any]] = []
        for e in evs:
            if isinstance(e, Snapshot):
                dec = s.decoder
                if dec is not None:  # delta: the decoder's exact state
                    fields = {"id": dec.ids.tolist(), **{n: [num(v) for v in dec.values(n)] for n in dec.schema.names}}
                    row.append({"type": "snapshot", "tick": e.tick, "ack": e.ack_seq, "ids": dec.ids.tolist(),
                                "q": dec.q.reshape(-1).tolist(), "fields": fields})  # fmt: skip
                else:
                    ents = e.entities
                    fields = {n: [num(v) for v in ents[n]] for n in ents.dtype.names or ()}
                    if ents.dtype["id"].kind == "b":
                        fields["id"] = [int(v) for v in ents["id"]]
                    row.append({"type": "snapshot", "tick": e.tick, "ack": e.ack_seq, "ids": fields["id"], "q": None,
                                "fields": fields})  # fmt: skip
            else:
                row.append({"type": type(e).__name__.lower()})
        out.append(row)
    return out


def js_decode(page: Page, frames: list[bytes]) -> list[list[dict[str, Any]]]:
    got: list[list[dict[str, Any]]] = page.evaluate(DECODE_JS, [base64.b64encode(f).decode() for f in frames])
    return got


def normalize(rows: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Only what both SDKs define: the kind of each event, and snapshots in full. Numbers compare as
    doubles: Playwright hands an integral double beyond 2^53 over as an int of its shortest digits."""

    def same(e: dict[str, Any]) -> dict[str, Any]:
        if e["type"] != "snapshot":
            return e if e["type"] == "raise" else {"type": e["type"]}
        fields = {k: [float(v) if type(v) in (int, float) else v for v in col] for k, col in e["fields"].items()}
        return {**e, "fields": fields}

    return [[same(e) for e in r] for r in rows]


def random_schema(rng: np.random.Generator) -> ReplicationSchema:
    fields: list[tuple[str, Quant]] = [("x", Quant("fixed", 0.0, 500.0, 1 / 16)),
                                       ("y", Quant("fixed", 0.0, 500.0, 1 / 32))]  # fmt: skip
    for i in range(int(rng.integers(0, 4))):
        if rng.random() < 0.5:
            lo = float(rng.integers(-1000, 0))
            step = float(2.0 ** -rng.integers(0, 9))
            fields.append((f"f{i}", Quant("fixed", lo, lo + float(rng.integers(1, 2000)), step)))
        else:
            lo = int(rng.integers(-(2**31), 0))
            fields.append((f"k{i}", Quant("int", lo, lo + int(rng.integers(1, 2**31)))))
    order = rng.permutation(len(fields))
    return ReplicationSchema(tuple(fields[i] for i in order))


def delta_stream(seed: int) -> list[bytes]:
    """A welcome and the delta frames one client receives: loss, reordering, stale and lost acks."""
    rng = np.random.default_rng(seed)
    schema = random_schema(rng)
    cap = int(rng.integers(4, 80))
    radius = None if rng.random() < 0.4 else float(rng.uniform(50, 400))
    budget = None if rng.random() < 0.5 else int(rng.integers(0, 600))
    rep = Replicator(schema, cap, 2, radius=radius)
    if budget is not None:
        budget = max(budget, rep.min_budget())
    alive = rng.random(cap) < 0.6
    gen = np.ones(cap, dtype=np.int64)
    vals = {n: rng.uniform(q.lo - 5, q.hi + 5, cap) for n, q in schema.fields}
    welcome = encode_welcome(int(rng.integers(1, 2**20)), 1, 60, 20, "parity", {"width": 500.0}, schema.dtype,
                             {"mode": "delta", "schema": schema_to_wire(schema), "aoi": radius or 0.0})  # fmt: skip
    out = [welcome]
    client = ClientSession()
    client.receive(welcome, 0.0)
    in_flight: list[tuple[int, bytes]] = []
    ack = 0
    for tick in range(1, int(rng.integers(20, 70))):
        flip = rng.random(cap) < 0.08
        gen = np.where(flip & ~alive, gen + 1, gen)
        alive ^= flip
        for n, q in schema.fields:
            move = rng.random(cap) < 0.5
            vals[n] = np.where(move, vals[n] + rng.normal(0, (q.hi - q.lo) / 50, cap), vals[n])
        idx = np.flatnonzero(alive)
        recs = np.zeros(len(idx), dtype=schema.dtype)
        recs["id"] = (gen[idx].astype(np.uint32) << 20) | idx.astype(np.uint32)
        for n, _ in schema.fields:
            recs[n] = np.clip(vals[n][idx], -(2**31), 2**31 - 1)
        rep.begin_send(tick, recs)
        own = int(idx[0]) if len(idx) else -1
        rep.set_viewers([0], [own])
        frame = rep.frame_for(0, ack, int(rng.integers(0, 2**32)), budget)
        if rng.random() < 0.08:  # a corrupted body: both decoders must drop it
            m = msgpack.unpackb(frame)
            frame = encode_delta_frame(m["k"], m["b"], m["a"], m["e"][: max(0, len(m["e"]) - 1)] + b"\xff")
        if rng.random() > 0.2:  # 20 % lost
            in_flight.append((tick + int(rng.integers(0, 4)), frame))  # delivered up to 3 sends late
        arrived = sorted((f for f in in_flight if f[0] <= tick), key=lambda f: f[0])
        in_flight = [f for f in in_flight if f[0] > tick]
        for _, f in arrived:
            out.append(f)
            client.receive(f, 0.0)
        if rng.random() < 0.7 and client.decoder is not None:  # the ack rides on an input that may be lost
            ack = client.decoder.ack
    return out


def raw_stream(seed: int) -> list[bytes]:
    """A welcome with a random record layout, raw snapshots of random bytes, and other frames."""
    rng = np.random.default_rng(seed)
    names = ["id"] + [f"c{i}" for i in range(int(rng.integers(0, 8)))]
    fmts = ["<u4"] + [str(rng.choice(FORMATS)) for _ in names[1:]]
    dtype = np.dtype(list(zip(names, fmts, strict=True)))
    out = [encode_welcome(7, 5, 30, 10, "raw", {"w": 1, "s": "x", "f": 0.5}, dtype)]
    for tick in range(6, 6 + int(rng.integers(1, 8))):
        n = int(rng.integers(0, 30))
        body = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).tobytes()
        out.append(encode_snapshot(tick, int(rng.integers(0, 2**32)), body))
        if rng.random() < 0.3:
            out.append(encode_events(tick, [(1, 2, 3), (2, 0, int(rng.integers(-(2**40), 2**40)))]))
        if rng.random() < 0.2:
            out.append(encode_error(20, "fair play: warned"))
        if rng.random() < 0.2:
            out.append(encode_pong(99.5, 1234.0, tick))
    out.append(msgpack.packb({"t": "nope"}))  # unknown type: both raise
    out.append(encode_snapshot(99, 0, b"\x00"))  # not a whole record (unless itemsize 1): both raise
    return out


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_delta_decoding_matches_python(sdk_page: Page, seed: int) -> None:
    frames = delta_stream(seed)
    assert normalize(js_decode(sdk_page, frames)) == normalize(py_decode(frames))


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_raw_decoding_matches_python(sdk_page: Page, seed: int) -> None:
    frames = raw_stream(seed)
    assert normalize(js_decode(sdk_page, frames)) == normalize(py_decode(frames))


PREDICT_JS = """async ({welcome, script}) => {
  const { Predictor, moveRule } = await import("/web/sdk/prediction.js");
  const p = new Predictor(moveRule(welcome), { epsilon: 1e-3, expireTicks: 12 });
  return script.map(([op, ...a]) => {
    if (op === "send") { p.send(...a); return null; }
    if (op === "snap") { return p.onSnapshot(...a); }
    return p.advance(a[0]);
  }).concat([[p.s[0], p.s[1], p.s[2], p.s[3]]]);
}"""

MOVES = {
    "wander": ({"tick_rate": 60, "width": 1000.0, "height": 1000.0, "player_speed": 5.0},
               {"rule": "velocity", "in": ["dx", "dy"], "speed": 5.0, "bounds": [0, 0, 1000, 1000]}),
    "startales": ({"tick_rate": 60, "width": 4000.0, "height": 4000.0, "max_accel": 200.0, "max_speed": 300.0},
                  {"rule": "thrust", "in": ["dx", "dy"], "accel": 200.0, "max_speed": 300.0,
                   "bounds": [0, 0, 4000, 4000]}),
}  # fmt: skip


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), game=st.sampled_from(sorted(MOVES)))
def test_prediction_matches_python(sdk_page: Page, seed: int, game: str) -> None:
    """The same inputs and snapshots, in any order and with losses: bit-identical positions."""
    rng = np.random.default_rng(seed)
    world, move = MOVES[game]
    py = ShipPredictor(move, int(world["tick_rate"]))  # the same binding the welcome's spec carries
    script: list[list[Any]] = []
    expected: list[Any] = []
    seq, tick = 0, 10
    for _ in range(int(rng.integers(10, 60))):
        r = rng.random()
        if r < 0.4:
            seq += 1
            dx, dy = (float(np.float32(v)) for v in rng.uniform(-1, 1, 2))
            script.append(["send", seq, dx, dy, tick + int(rng.integers(0, 5))])
            py.send(seq, dx, dy, script[-1][4])
            expected.append(None)
        elif r < 0.7:
            k = tick - int(rng.integers(0, 8))
            x, y = (float(np.float32(v)) for v in rng.uniform(-50, world["width"] + 50, 2))
            vx, vy = (float(np.float32(v)) for v in rng.uniform(-300, 300, 2))
            a = int(rng.integers(0, seq + 1))
            script.append(["snap", k, a, x, y, vx, vy])
            expected.append(py.on_snapshot(k, a, x, y, vx, vy))
        else:
            tick += int(rng.integers(0, 6))
            script.append(["advance", tick + float(rng.random())])
            expected.append(list(py.advance(script[-1][1])))
    expected.append([float(py.x), float(py.y), float(py.vx), float(py.vy)])
    welcome = {"tickRate": 60, "world": world, "spec": {"move": move}}
    got = sdk_page.evaluate(PREDICT_JS, {"welcome": welcome, "script": script})
    for g, e, s in zip(got, expected, [*script, ["end"]], strict=True):
        if s[0] == "snap" and e is not None and g is not None:
            assert g == pytest.approx(e, rel=1e-12, abs=1e-12), s  # a distance: hypot may round differently
        else:
            assert g == e, s
