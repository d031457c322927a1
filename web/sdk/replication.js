// Client side of delta replication (docs/replication.md), a port of
// netcode/replication/decoder.py and the decode_body kernel of netcode/replication/kernels.py:
// a ring of the last 32 decoded snapshots; each delta applies to the baseline it names.

/** The number of decoded snapshots kept as baselines (the server's ring). */
export const RING = 32;

/**
 * @typedef {Object} Quant
 * @property {string} name
 * @property {"fixed"|"int"} kind
 * @property {number} lo
 * @property {number} hi
 * @property {number} step
 * @property {number} offset  lo for "fixed", 0 for "int"
 * @property {number} scale   step for "fixed", 1 for "int"
 */

/**
 * @typedef {Object} Schema
 * @property {Quant[]} fields
 * @property {string[]} names
 * @property {[string, string]} pos  the two position fields
 * @property {[number, number, number, number]} bounds  x0, y0, x1, y1 of the position fields
 */

/**
 * The schema of a welcome's `rep.schema`, checked as `schema_from_wire` does; throws on anything
 * malformed.
 * @param {any} spec
 * @returns {Schema}
 */
export function parseSchema(spec) {
  if (!spec || typeof spec !== "object" || !Array.isArray(spec.fields)) {
    throw new Error("replication schema must be a map with a 'fields' list");
  }
  const fields = [];
  const seen = new Set();
  for (const f of spec.fields) {
    if (!Array.isArray(f) || f.length !== 5 || typeof f[0] !== "string" || (f[1] !== "fixed" && f[1] !== "int")) {
      throw new Error(`bad schema field ${JSON.stringify(f)}`);
    }
    if (!f.slice(2).every((v) => typeof v === "number" && Number.isFinite(v))) throw new Error("bad schema field");
    const [name, kind, lo, hi, step] = f;
    if (!(hi > lo) || (kind === "fixed" && !(step > 0))) throw new Error(`bad quantization of ${name}`);
    const qmin = kind === "fixed" ? 0 : Math.ceil(lo);
    const qmax = kind === "fixed" ? Math.round((hi - lo) / step) : Math.floor(hi);
    if (qmax > 2147483647 || qmin < -2147483648) throw new Error(`${name} does not fit in int32`);
    if (seen.has(name) || name === "id") throw new Error(`bad field name ${name}`);
    seen.add(name);
    fields.push({ name, kind, lo, hi, step, offset: kind === "fixed" ? lo : 0, scale: kind === "fixed" ? step : 1 });
  }
  if (fields.length < 1 || fields.length > 30) throw new Error("a schema has 1..30 fields");
  const pos = spec.pos === undefined ? ["x", "y"] : spec.pos;
  if (!Array.isArray(pos) || pos.length !== 2 || !pos.every((p) => typeof p === "string")) {
    throw new Error("bad schema 'pos'");
  }
  const names = fields.map((f) => f.name);
  const fx = fields.find((f) => f.name === pos[0]);
  const fy = fields.find((f) => f.name === pos[1]);
  const bounds = /** @type {[number, number, number, number]} */ (
    fx && fy ? [fx.lo, fy.lo, fx.hi, fy.hi] : [0, 0, 0, 0]);
  return { fields, names, pos: [pos[0], pos[1]], bounds };
}

/**
 * One decoded snapshot: ids ascending, q row-major (n × F) quantized values.
 * @typedef {{ids: Uint32Array, q: Int32Array}} QState
 */

const EMPTY = { ids: new Uint32Array(0), q: new Int32Array(0) };
const TWO53 = 9007199254740992;

export class ReplicationDecoder {
  /** @param {Schema} schema @param {number} [ring] */
  constructor(schema, ring = RING) {
    this.schema = schema;
    this.ring = ring;
    this.F = schema.fields.length;
    /** @type {Map<number, QState>} */
    this.snaps = new Map([[0, EMPTY]]);
    this.tick = 0; // newest snapshot id decoded (= the ack to send); 0 = none
    this.ids = EMPTY.ids;
    this.q = EMPTY.q;
    this.dropped = 0; // frames whose baseline was unknown or whose body was malformed
  }

  get ack() { return this.tick; }

  /** @param {number} tick */
  has(tick) { return this.snaps.has(tick); }

  /** @param {number} tick @returns {QState | undefined} */
  state(tick) { return tick ? this.snaps.get(tick) : undefined; }

  /**
   * Apply one delta body against the baseline it names; false when it could not be applied
   * (unknown baseline, malformed body). A duplicate is true and changes nothing.
   * @param {number} tick @param {number} baseline @param {Uint8Array} body
   */
  apply(tick, baseline, body) {
    if (!(tick > 0)) { this.dropped++; return false; }
    if (this.snaps.has(tick)) return true;
    const base = this.snaps.get(baseline);
    if (base === undefined) { this.dropped++; return false; }
    const out = decodeBody(body, base.ids, base.q, this.F);
    if (out === null) { this.dropped++; return false; }
    this.snaps.set(tick, out);
    if (this.snaps.size > this.ring + 1) {
      const old = [...this.snaps.keys()].filter((t) => t).sort((a, b) => a - b);
      for (const t of old.slice(0, this.snaps.size - 1 - this.ring)) this.snaps.delete(t);
    }
    if (tick > this.tick) {
      this.tick = tick;
      this.ids = out.ids;
      this.q = out.q;
    }
    return true;
  }

  /**
   * Dequantized float64 values of one field for `this.ids` (offset + q × scale, as numpy does).
   * @param {string} name @param {QState} [st]
   */
  values(name, st) {
    const s = st || { ids: this.ids, q: this.q };
    const f = this.schema.names.indexOf(name);
    if (f < 0) throw new Error(`no field ${name}`);
    const { offset, scale } = this.schema.fields[f];
    const n = s.ids.length, F = this.F, out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = offset + s.q[i * F + f] * scale;
    return out;
  }
}

/**
 * The decode_body kernel: apply a delta body to a baseline; null on a malformed body.
 * Values are int32 and wrap like the reference's int32 arrays. Varints above 2^53 (never written
 * by the reference encoder, whose values are zigzagged int32 differences) count as malformed.
 * @param {Uint8Array} buf @param {Uint32Array} baseIds @param {Int32Array} baseQ @param {number} F
 * @returns {QState | null}
 */
export function decodeBody(buf, baseIds, baseQ, F) {
  const m = baseIds.length;
  const ABS = 2 ** F;
  const n_buf = buf.length;
  let pos = 0;
  // LEB128 reader: returns the value, or -1 (and pos = -1) on truncation / over-long input.
  const get = () => {
    let v = 0, mul = 1, shift = 0;
    for (;;) {
      if (pos >= n_buf || shift > 56) { pos = -1; return -1; }
      const b = buf[pos++];
      v += (b & 0x7f) * mul;
      if (b < 128) return v < TWO53 ? v : ((pos = -1), -1);
      mul *= 128;
      shift += 7;
    }
  };
  const unzz = (/** @type {number} */ z) => (z % 2 === 0 ? z / 2 : -(z + 1) / 2) | 0;
  const work = baseQ.slice(0, m * F);
  const removed = new Uint8Array(m);
  let n = get();
  if (pos < 0) return null;
  let prev = -1;
  for (let k = 0; k < n; k++) {
    const g = get();
    if (pos < 0) return null;
    const idx = prev + 1 + g;
    if (idx >= m) return null;
    removed[idx] = 1;
    prev = idx;
  }
  n = get();
  if (pos < 0) return null;
  prev = -1;
  for (let k = 0; k < n; k++) {
    const g = get();
    if (pos < 0) return null;
    const idx = prev + 1 + g;
    if (idx >= m || removed[idx]) return null;
    prev = idx;
    const mask = get();
    if (pos < 0) return null;
    const row = idx * F;
    if (mask === ABS) {
      for (let f = 0; f < F; f++) {
        const z = get();
        if (pos < 0) return null;
        work[row + f] = unzz(z);
      }
    } else if (mask === 0 || mask > ABS) {
      return null;
    } else {
      for (let f = 0, bit = 1; f < F; f++, bit *= 2) {
        if (Math.floor(mask / bit) % 2) {
          const z = get();
          if (pos < 0) return null;
          work[row + f] = (work[row + f] + unzz(z)) | 0;
        }
      }
    }
  }
  n = get();
  if (pos < 0) return null;
  if (n > Math.floor(n_buf / (F + 1)) + 1) return null;
  const eIds = new Uint32Array(n);
  const eQ = new Int32Array(n * F);
  let prevId = 0;
  for (let e = 0; e < n; e++) {
    const g = get();
    if (pos < 0) return null;
    const eid = prevId + g;
    if ((e > 0 && g === 0) || eid > 0xffffffff || eid === 0) return null;
    prevId = eid;
    eIds[e] = eid;
    for (let f = 0; f < F; f++) {
      const z = get();
      if (pos < 0) return null;
      eQ[e * F + f] = unzz(z);
    }
  }
  if (pos !== n_buf) return null;
  // merge the surviving baseline with the entering ids
  const outIds = new Uint32Array(m + n);
  const outQ = new Int32Array((m + n) * F);
  let i = 0, e = 0, o = 0;
  while (i < m || e < n) {
    if (i < m && removed[i]) { i++; continue; }
    if (e >= n || (i < m && baseIds[i] < eIds[e])) {
      outIds[o] = baseIds[i];
      for (let f = 0, a = i * F, b = o * F; f < F; f++) outQ[b + f] = work[a + f];
      i++;
    } else if (i >= m || eIds[e] < baseIds[i]) {
      outIds[o] = eIds[e];
      for (let f = 0, a = e * F, b = o * F; f < F; f++) outQ[b + f] = eQ[a + f];
      e++;
    } else {
      return null;
    }
    o++;
  }
  return { ids: outIds.slice(0, o), q: outQ.slice(0, o * F) };
}
