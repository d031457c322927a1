// A game view: wires a client's snapshots to prediction (own entity), interpolation (the rest)
// and the canvas renderer. The play page and the spectator view are thin pages around it.

import { Interpolator, Predictor, TickClock, defaultDelayTicks, moveRule } from "./prediction.js";
import { Renderer } from "./render.js";

export class GameView {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {import("./client.js").ArbiterClient} client
   * @param {{now?: () => number}} [opts]
   */
  constructor(canvas, client, opts = {}) {
    this.canvas = canvas;
    this.client = client;
    this.now = opts.now || (() => performance.now() / 1000);
    /** @type {Renderer | null} */
    this.renderer = null;
    /** @type {Interpolator | null} */
    this.interp = null;
    /** @type {Predictor | null} */
    this.predictor = null;
    /** @type {TickClock | null} */
    this.clock = null;
    /** @type {{id: number, x: number, y: number} | null} */
    this.own = null;
    this.visible = 0;
    this.running = false;
    client.on("welcome", (/** @type {any} */ w) => this.onWelcome(w));
    client.on("snapshot", (/** @type {any} */ s) => this.onSnapshot(s));
  }

  /** @param {import("./session.js").Welcome} w */
  onWelcome(w) {
    this.renderer = new Renderer(this.canvas, w);
    this.interp = new Interpolator(defaultDelayTicks(w.tickRate, w.sendRate));
    this.clock = new TickClock(w.tickRate);
    const rule = w.player ? moveRule(w) : null;
    // With quantized snapshots a correction is counted only beyond the quantization step.
    const step = w.schema ? Math.max(...w.schema.fields.map((f) => (f.kind === "fixed" ? f.step : 0))) : 1e-3;
    this.predictor = rule ? new Predictor(rule, { epsilon: step }) : null;
    this.own = null;
  }

  /** @param {import("./session.js").Snapshot} snap */
  onSnapshot(snap) {
    const w = this.client.welcome;
    if (!w || !this.interp || !this.clock || !this.renderer) return;
    this.clock.observe(snap.tick, this.now());
    this.renderer.styles.update(snap);
    const [kx, ky] = w.schema ? w.schema.pos : ["x", "y"];
    const x = snap.fields[kx], y = snap.fields[ky];
    if (!x || !y) return;
    const p = this.predictor;
    this.interp.push(snap.tick, snap.ids, x, y, p ? w.player : undefined);
    if (p) {
      const i = snap.ids.indexOf(w.player);
      if (i >= 0) {
        const vx = snap.fields.vx, vy = snap.fields.vy;
        p.onSnapshot(snap.tick, snap.ackSeq, x[i], y[i], vx ? vx[i] : 0, vy ? vy[i] : 0);
      }
    }
  }

  /**
   * Send an input and predict it at once (the own entity moves before the server answers).
   * @param {Record<string, number>} values
   */
  sendInput(values) {
    const seq = this.client.sendInput(values);
    const p = this.predictor;
    if (seq && p && this.clock) {
      const [kx, ky] = p.rule.in;
      p.send(seq, values[kx] || 0, values[ky] || 0, this.clock.inputTick(this.now(), this.client.rtt || 0));
    }
    return seq;
  }

  /** Draw one frame (call from requestAnimationFrame). */
  frame() {
    const w = this.client.welcome, r = this.renderer;
    if (!w || !r || !this.interp || !this.clock) return;
    r.resize();
    const now = this.now();
    const sample = this.interp.sample(this.clock.renderTick(now, this.interp.delayTicks));
    let own = null;
    if (this.predictor && this.predictor.initialized) {
      const [x, y] = this.predictor.advance(this.clock.inputTick(now, this.client.rtt || 0));
      own = { id: w.player, x, y };
    } else if (w.player) {
      const i = sample.ids.indexOf(w.player);
      if (i >= 0) own = { id: w.player, x: sample.x[i], y: sample.y[i] };
    }
    this.own = own;
    this.visible = sample.ids.length;
    const follow = own && w.aoi > 0;
    const cam = follow ? r.camera(own.x, own.y, w.aoi) : r.camera();
    r.draw(sample, own, cam);
  }

  /** Run `frame` on every animation frame, and `after` behind it (e.g. a HUD). @param {() => void} [after] */
  start(after) {
    if (this.running) return;
    this.running = true;
    const loop = () => {
      if (!this.running) return;
      this.frame();
      if (after) after();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }
}
