// Client-side prediction, reconciliation and interpolation, a port of netcode/prediction.py
// (docs/prediction.md). The movement rule comes from the welcome's `spec.move` (contract 1); the
// float32 arithmetic of the server's kernels is reproduced with Math.fround after every operation
// (float64 then rounding is exact for + − × ÷ and sqrt of float32 operands), so a prediction from
// exact snapshots is bit-identical to the server.

const F = Math.fround;

/**
 * @typedef {Object} MoveRule
 * @property {"velocity"|"thrust"} rule
 * @property {[string, string]} in   input keys of the x and y command
 * @property {number} dt             float32(1 / tick_rate)
 * @property {[number, number, number, number]} bounds
 * @property {number} speed
 * @property {number} accel
 * @property {number} maxSpeed
 */

/**
 * The prediction rule of a welcome, or null when the game has none (`spec.move.rule` "none",
 * or a server without a spec: no prediction then).
 * @param {import("./session.js").Welcome} welcome
 * @returns {MoveRule | null}
 */
export function moveRule(welcome) {
  const mv = welcome.spec && welcome.spec.move;
  if (!mv || (mv.rule !== "velocity" && mv.rule !== "thrust")) return null;
  const b = Array.isArray(mv.bounds) && mv.bounds.length === 4 ? mv.bounds.map(Number)
    : [0, 0, Number(welcome.world.width), Number(welcome.world.height)];
  if (!b.every(Number.isFinite)) return null;
  const keys = Array.isArray(mv.in) && mv.in.length === 2 ? mv.in : ["dx", "dy"];
  return {
    rule: mv.rule, in: [String(keys[0]), String(keys[1])], dt: F(1 / welcome.tickRate),
    bounds: /** @type {[number, number, number, number]} */ (b.map(F)),
    speed: F(Number(mv.speed ?? 0)), accel: F(Number(mv.accel ?? 0)), maxSpeed: F(Number(mv.max_speed ?? 0)),
  };
}

/**
 * One tick of the rule, in float32 like sim.movement (thrust_step / velocity_step).
 * @param {MoveRule} r @param {number[]} s  [x, y, vx, vy], updated in place
 * @param {number} tx @param {number} ty
 */
export function step(r, s, tx, ty) {
  const [x0, y0, x1, y1] = r.bounds;
  const dt = r.dt;
  let vx = s[2], vy = s[3];
  if (r.rule === "thrust") {
    vx = F(vx + F(F(tx * r.accel) * dt));
    vy = F(vy + F(F(ty * r.accel) * dt));
    const sp2 = F(F(vx * vx) + F(vy * vy));
    if (sp2 > F(r.maxSpeed * r.maxSpeed)) {
      const k = F(r.maxSpeed / F(Math.sqrt(sp2)));
      vx = F(vx * k);
      vy = F(vy * k);
    }
  }
  const nx = F(s[0] + F(vx * dt));
  const ny = F(s[1] + F(vy * dt));
  s[0] = Math.min(Math.max(nx, x0), x1);
  s[1] = Math.min(Math.max(ny, y0), y1);
  s[2] = vx;
  s[3] = vy;
}

/** Prediction and reconciliation of the client's own entity (`ShipPredictor`). */
export class Predictor {
  /** @param {MoveRule} rule @param {{epsilon?: number, maxPending?: number, expireTicks?: number}} [opts] */
  constructor(rule, opts = {}) {
    this.rule = rule;
    this.epsilon = opts.epsilon ?? 1e-3;
    this.maxPending = opts.maxPending ?? 1024;
    this.expireTicks = opts.expireTicks ?? 12;
    /** @type {Array<{seq: number, dx: number, dy: number, tick: number}>} */
    this.pending = [];
    /** @type {Map<number, [number, number]>} seq -> thrust of recent inputs */
    this.sent = new Map();
    this.initialized = false;
    this.tick = 0;
    this.s = [0, 0, 0, 0]; // predicted x, y, vx, vy at `tick`
    this.serverTick = -1;
    this.ackSeq = 0;
    this.ackD = [0, 0];
    this.snapshots = 0;
    this.corrections = 0;
    this.stale = 0;
    this.expired = 0;
    this.lastError = 0;
    this.maxError = 0;
    this.sumError = 0;
  }

  get x() { return this.s[0]; }
  get y() { return this.s[1]; }

  /** Record an input as sent (seq increasing), to take effect at server tick `tick`.
   * @param {number} seq @param {number} dx @param {number} dy @param {number} tick */
  send(seq, dx, dy, tick) {
    if (this.initialized && tick - 1 > this.tick) this.advance(tick - 1);
    const p = { seq, dx: F(dx), dy: F(dy), tick };
    this.pending.push(p);
    this.sent.set(seq, [p.dx, p.dy]);
    if (this.sent.size > 2 * this.maxPending) this.sent.delete(this.sent.keys().next().value);
    if (this.pending.length > this.maxPending) this.pending.shift();
  }

  /** Predict up to floor(tick) (never backwards); returns [x, y].
   * @param {number} tick @returns {[number, number]} */
  advance(tick) {
    const t = Math.floor(tick);
    if (this.initialized && t > this.tick) {
      this.s = this.run(this.tick, t, this.s);
      this.tick = t;
    }
    return [this.s[0], this.s[1]];
  }

  /**
   * Rewind to the server's state at `tick`, drop acknowledged inputs, replay the rest; returns
   * the correction (distance between the position predicted before and after), or null (stale).
   * @param {number} tick @param {number} ackSeq @param {number} x @param {number} y @param {number} vx @param {number} vy
   */
  onSnapshot(tick, ackSeq, x, y, vx, vy) {
    if (tick <= this.serverTick || ackSeq < this.ackSeq) { this.stale++; return null; }
    this.acknowledge(ackSeq, tick);
    this.serverTick = tick;
    const server = [F(x), F(y), F(vx), F(vy)];
    if (!this.initialized) {
      this.initialized = true;
      this.tick = tick;
      this.s = server;
      return 0;
    }
    const target = Math.max(this.tick, tick);
    const old = this.run(this.tick, target, this.s);
    this.s = this.run(tick, target, server);
    this.tick = target;
    const err = Math.hypot(this.s[0] - old[0], this.s[1] - old[1]);
    this.snapshots++;
    this.lastError = err;
    this.sumError += err;
    if (err > this.maxError) this.maxError = err;
    if (err > this.epsilon) this.corrections++;
    return err;
  }

  /** @param {number} ackSeq @param {number} tick */
  acknowledge(ackSeq, tick) {
    if (ackSeq !== this.ackSeq) {
      const thrust = this.sent.get(ackSeq);
      if (thrust !== undefined) this.ackD = thrust;
      this.ackSeq = ackSeq;
    }
    const limit = tick - this.expireTicks;
    this.pending = this.pending.filter((p) => {
      if (p.seq <= ackSeq) return false;
      if (p.tick < limit) { this.expired++; return false; }
      return true;
    });
  }

  /** Run ticks (t0, t1] from state s: the acknowledged input, then pending inputs from their
   * expected tick (never before the last server tick + 1).
   * @param {number} t0 @param {number} t1 @param {number[]} s0 @returns {number[]} */
  run(t0, t1, s0) {
    const s = s0.slice();
    if (t1 <= t0) return s;
    const floor = this.serverTick + 1;
    let [dx, dy] = this.ackD;
    let t = t0;
    const rule = this.rule;
    const ticks = (/** @type {number} */ n) => {
      if (rule.rule === "velocity") { s[2] = F(dx * rule.speed); s[3] = F(dy * rule.speed); }
      for (let i = 0; i < n; i++) step(rule, s, dx, dy);
    };
    for (const p of this.pending) {
      const start = Math.max(p.tick, floor, t0 + 1);
      if (start > t1) break;
      if (start - 1 > t) { ticks(start - 1 - t); t = start - 1; }
      dx = p.dx;
      dy = p.dy;
    }
    if (t1 > t) ticks(t1 - t);
    return s;
  }

  stats() {
    return {
      snapshots: this.snapshots, corrections: this.corrections, meanError: this.snapshots ? this.sumError / this.snapshots : 0,
      maxError: this.maxError, lastError: this.lastError, stale: this.stale, expired: this.expired, pending: this.pending.length,
    };
  }
}

/** Interpolation delay: `intervals` send intervals, in ticks.
 * @param {number} tickRate @param {number} sendRate @param {number} [intervals] */
export const defaultDelayTicks = (tickRate, sendRate, intervals = 2) => (intervals * tickRate) / sendRate;

/**
 * @typedef {{tick: number, ids: Uint32Array, x: Float64Array, y: Float64Array}} Snap
 * @typedef {{tick: number, ids: Uint32Array, x: Float64Array, y: Float64Array, extrapolated: boolean}} Interpolated
 */

/** Snapshot buffer of remote entities, sampled `delayTicks` behind the newest (`Interpolator`). */
export class Interpolator {
  /** @param {number} delayTicks @param {number} [capacity] @param {number} [maxExtrapolateTicks] */
  constructor(delayTicks, capacity = 32, maxExtrapolateTicks = 6) {
    this.delayTicks = delayTicks;
    this.capacity = capacity;
    this.maxExtrapolateTicks = maxExtrapolateTicks;
    /** @type {Snap[]} */
    this.snaps = [];
  }

  get latestTick() { return this.snaps.length ? this.snaps[this.snaps.length - 1].tick : -1; }

  /**
   * Add one snapshot (any arrival order); false when a duplicate or older than a full buffer.
   * @param {number} tick @param {ArrayLike<number>} ids @param {ArrayLike<number>} x @param {ArrayLike<number>} y
   * @param {number} [exclude]  an id left out (the own entity)
   */
  push(tick, ids, x, y, exclude) {
    const snaps = this.snaps;
    if (snaps.length && tick < snaps[0].tick && snaps.length >= this.capacity) return false;
    let i = 0;
    while (i < snaps.length && snaps[i].tick < tick) i++;
    if (i < snaps.length && snaps[i].tick === tick) return false;
    const order = Array.from({ length: ids.length }, (_, k) => k).filter((k) => ids[k] !== exclude);
    let sorted = true;
    for (let k = 1; k < order.length; k++) if (ids[order[k - 1]] > ids[order[k]]) { sorted = false; break; }
    if (!sorted) order.sort((a, b) => ids[a] - ids[b]);
    const n = order.length;
    const snap = { tick, ids: new Uint32Array(n), x: new Float64Array(n), y: new Float64Array(n) };
    for (let k = 0; k < n; k++) { const o = order[k]; snap.ids[k] = ids[o]; snap.x[k] = x[o]; snap.y[k] = y[o]; }
    snaps.splice(i, 0, snap);
    if (snaps.length > this.capacity) snaps.shift();
    return true;
  }

  /** @param {number} renderTick @returns {Interpolated} */
  sample(renderTick) {
    const snaps = this.snaps;
    const rt = renderTick;
    if (!snaps.length) return { tick: rt, ids: new Uint32Array(0), x: new Float64Array(0), y: new Float64Array(0), extrapolated: false };
    if (rt <= snaps[0].tick) {
      const s = snaps[0];
      return { tick: rt, ids: s.ids.slice(), x: s.x.slice(), y: s.y.slice(), extrapolated: false };
    }
    let ia = snaps.length - 1;
    while (ia > 0 && snaps[ia].tick > rt) ia--;
    const a = snaps[ia];
    const x = a.x.slice(), y = a.y.slice();
    if (ia + 1 < snaps.length) {
      const b = snaps[ia + 1];
      const alpha = (rt - a.tick) / (b.tick - a.tick);
      match(a.ids, b.ids, (i, j) => { x[i] += (b.x[j] - a.x[i]) * alpha; y[i] += (b.y[j] - a.y[i]) * alpha; });
      return { tick: rt, ids: a.ids.slice(), x, y, extrapolated: false };
    }
    if (ia >= 1) {
      const p = snaps[ia - 1];
      const ahead = Math.min(rt - a.tick, this.maxExtrapolateTicks);
      const span = a.tick - p.tick;
      match(a.ids, p.ids, (i, j) => { x[i] += (a.x[i] - p.x[j]) * (ahead / span); y[i] += (a.y[i] - p.y[j]) * (ahead / span); });
    }
    return { tick: rt, ids: a.ids.slice(), x, y, extrapolated: rt > a.tick };
  }
}

/** Call fn(i, j) for every a[i] === b[j] of two ascending id arrays.
 * @param {Uint32Array} a @param {Uint32Array} b @param {(i: number, j: number) => void} fn */
function match(a, b, fn) {
  let i = 0, j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) fn(i++, j++);
    else if (a[i] < b[j]) i++;
    else j++;
  }
}

/** Server tick estimate from snapshot arrivals, in the caller's clock (seconds) (`TickClock`). */
export class TickClock {
  /** @param {number} tickRate @param {number} [follow] */
  constructor(tickRate, follow = 0.05) {
    this.tickRate = tickRate;
    this.follow = follow;
    /** @type {number | null} */
    this.offset = null;
  }

  /** @param {number} tick @param {number} now */
  observe(tick, now) {
    const sample = tick - now * this.tickRate;
    if (this.offset === null || sample > this.offset) this.offset = sample;
    else this.offset += (sample - this.offset) * this.follow;
  }

  /** @param {number} now */
  latest(now) { return (this.offset ?? 0) + now * this.tickRate; }

  /** @param {number} now @param {number} delayTicks */
  renderTick(now, delayTicks) { return this.latest(now) - delayTicks; }

  /** The server tick whose step first applies an input sent at `now`.
   * @param {number} now @param {number} rtt seconds */
  inputTick(now, rtt) { return Math.floor(this.latest(now) + rtt * this.tickRate) + 1; }
}
