// Arbiter wire protocol v1 (docs/protocol.md) for the browser: message constants, encoders,
// the record layout ("dtype") and the raw snapshot body. A port of netcode/protocol.py.

import { decode, encode, f32, MsgpackError } from "./msgpack.js";

export const PROTOCOL_VERSION = 1;
export const UINT32_MAX = 0xffffffff;

/** `err` codes (protocol.md §3). */
export const ErrorCode = Object.freeze({
  MALFORMED: 1, UNKNOWN_TYPE: 2, BAD_FIELD: 3, NOT_READY: 4, DUPLICATE_HELLO: 5, VERSION_MISMATCH: 6,
  SERVER_FULL: 7, TOO_LARGE: 8, RATE_LIMITED: 9, TOKEN_MISSING: 10, TOKEN_MALFORMED: 11,
  TOKEN_BAD_SIGNATURE: 12, TOKEN_EXPIRED: 13, TOKEN_NOT_YET_VALID: 14, TOKEN_WRONG_CAMPAIGN: 15,
  TOKEN_REPLAYED: 16, TOKEN_BAD_CLAIMS: 17, FORBIDDEN: 18, WARNED: 20, BANNED: 21, CONNECTION_REFUSED: 22,
  ACCOUNT_IN_USE: 23, RTC_UNAVAILABLE: 24, RTC_BAD_SIGNAL: 25, RTC_LIMIT: 26, UNKNOWN_CAMPAIGN: 27,
});

/** WebSocket close codes (protocol.md, bye). */
export const CloseCode = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, TOO_BIG: 1009, PROTOCOL_VIOLATION: 4000, TOO_SLOW: 4001,
  HANDSHAKE_TIMEOUT: 4002, VERSION_MISMATCH: 4003, SERVER_FULL: 4004, KICKED: 4005, UNAUTHORIZED: 4006,
  BANNED: 4007, TOO_MANY_CONNECTIONS: 4008, REPLACED: 4009, ACCOUNT_IN_USE: 4010, UNKNOWN_CAMPAIGN: 4011,
});

/** The reason of a `bye` that asks the client to rejoin (the campaign moves to another server). */
export const BYE_RELOCATE = "relocate";

/** Close codes after which reconnecting the same way cannot help. */
export const FINAL_CLOSE_CODES = new Set([4003, 4005, 4006, 4007, 4011]);

/** A frame that violates the protocol. */
export class ProtocolError extends Error {
  /** @param {number} code @param {string} msg */
  constructor(code, msg) {
    super(msg);
    this.code = code;
  }
}

/**
 * The engine's own input keys; a game's inputs come from the welcome's `spec.inputs`.
 * Without a spec the SDK knows only the thrust every built-in game takes.
 * @type {Array<[string, "f32"|"i32"|"u32", number, number]>}
 */
export const FALLBACK_INPUTS = [["dx", "f32", -1, 1], ["dy", "f32", -1, 1]];

/** @param {Uint8Array} payload @returns {Record<string, any>} */
export function unpackMap(payload) {
  let m;
  try {
    m = decode(payload);
  } catch (e) {
    throw new ProtocolError(ErrorCode.MALFORMED, `not msgpack: ${e instanceof MsgpackError ? e.message : e}`);
  }
  if (m === null || typeof m !== "object" || Array.isArray(m) || m instanceof Uint8Array) {
    throw new ProtocolError(ErrorCode.MALFORMED, "frame is not a map");
  }
  if (typeof m.t !== "string") throw new ProtocolError(ErrorCode.MALFORMED, 'missing or non-string "t"');
  return m;
}

/** @param {any} v */
const isInt = (v) => (typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint";

/**
 * An integer field within [lo, hi] (BigInt beyond 2^53), or ProtocolError(BAD_FIELD).
 * @param {Record<string, any>} m @param {string} key @param {number|bigint} lo @param {number|bigint} hi
 * @returns {number}
 */
export function reqInt(m, key, lo, hi) {
  const v = m[key];
  if (!isInt(v)) throw new ProtocolError(ErrorCode.BAD_FIELD, `${key}: int expected`);
  if (v < lo || v > hi) throw new ProtocolError(ErrorCode.BAD_FIELD, `${key} out of range`);
  return /** @type {number} */ (v);
}

/** @param {Record<string, any>} m @param {string} key @returns {number} */
export function reqFloat(m, key) {
  const v = m[key];
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ProtocolError(ErrorCode.BAD_FIELD, `${key}: finite float expected`);
  return v;
}

/** @param {Record<string, any>} m @param {string} key @returns {string} */
export function reqStr(m, key) {
  const v = m[key];
  if (typeof v !== "string") throw new ProtocolError(ErrorCode.BAD_FIELD, `${key}: str expected`);
  return v;
}

// -------------------------------------------------------------------------------- encoders

/** @param {string} name @param {string} [token] @param {boolean} [watch] */
export function encodeHello(name, token = "", watch = false) {
  /** @type {Record<string, any>} */
  const m = { t: "hello", v: PROTOCOL_VERSION, token, name };
  if (watch) m.watch = 1;
  return encode(m);
}

/** @param {number} clientTime */
export function encodePing(clientTime) {
  return encode({ t: "ping", c: clientTime }); // an integer time travels as an int: the server widens it
}

/**
 * One `in` frame. `values` holds the game's inputs by key; each is clamped to its legal range
 * from `inputs` (the welcome's `spec.inputs`): a page can never send an illegal value. Zero
 * values of non-float inputs are omitted, as the reference client omits defaults.
 * @param {number} seq @param {number} ct
 * @param {Record<string, number>} values
 * @param {Array<[string, string, number, number]>} inputs
 * @param {number} [ack]
 */
export function encodeInput(seq, ct, values, inputs, ack) {
  /** @type {Record<string, any>} */
  const m = { t: "in", s: seq, ct };
  for (const [key, type, lo, hi] of inputs) {
    let v = Number(values[key] ?? 0);
    if (!Number.isFinite(v)) v = 0;
    v = Math.min(Math.max(v, lo), hi);
    if (type === "f32") m[key] = f32(v);
    else if (v !== 0) m[key] = Math.min(Math.max(Math.round(v), Math.ceil(lo)), Math.floor(hi));
  }
  if (ack) m.ack = ack;
  return encode(m);
}

// -------------------------------------------------------------------------------- records

const FORMAT_RE = /^(<[iuf][248]|\|[iub]1)$/;

/**
 * @typedef {Object} Field
 * @property {string} name
 * @property {string} format  numpy type string, e.g. "<f4"
 * @property {number} offset
 * @property {number} size
 */

/**
 * @typedef {Object} Dtype
 * @property {Field[]} fields
 * @property {number} itemsize
 */

/**
 * The packed record layout of a welcome's `dtype`, checked as `dtype_from_wire` does.
 * @param {any} spec
 * @returns {Dtype}
 */
export function parseDtype(spec) {
  if (!Array.isArray(spec) || spec.length < 1 || spec.length > 256) {
    throw new ProtocolError(ErrorCode.BAD_FIELD, "dtype must be a list of 1..256 fields");
  }
  const fields = [];
  const seen = new Set();
  let offset = 0;
  for (const item of spec) {
    if (!Array.isArray(item) || item.length !== 2) throw new ProtocolError(ErrorCode.BAD_FIELD, "dtype field must be [name, format]");
    const [name, format] = item;
    if (typeof name !== "string" || name.length < 1 || name.length > 64 || seen.has(name)) {
      throw new ProtocolError(ErrorCode.BAD_FIELD, "dtype field name invalid or repeated");
    }
    if (typeof format !== "string" || !FORMAT_RE.test(format)) {
      throw new ProtocolError(ErrorCode.BAD_FIELD, `dtype format not allowed: ${String(format).slice(0, 20)}`);
    }
    seen.add(name);
    const size = Number(format[2]);
    fields.push({ name, format, offset, size });
    offset += size;
  }
  return { fields, itemsize: offset };
}

const COLUMN = {
  "|i1": Int8Array, "|u1": Uint8Array, "|b1": Uint8Array, "<i2": Int16Array, "<u2": Uint16Array,
  "<i4": Int32Array, "<u4": Uint32Array, "<i8": BigInt64Array, "<u8": BigUint64Array,
  "<f2": Float32Array, "<f4": Float32Array, "<f8": Float64Array,
};

/** @param {number} h */
function half(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * Columns of a raw snapshot body (`n × itemsize` packed little-endian records), one typed array
 * per field, by name.
 * @param {Uint8Array} body @param {Dtype} dtype
 * @returns {{count: number, columns: Record<string, any>}}
 */
export function decodeRecords(body, dtype) {
  if (body.length % dtype.itemsize) throw new ProtocolError(ErrorCode.BAD_FIELD, "entity body is not a whole number of records");
  const n = body.length / dtype.itemsize;
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const stride = dtype.itemsize;
  /** @type {Record<string, any>} */
  const columns = Object.create(null);
  for (const f of dtype.fields) {
    const col = new (/** @type {any} */ (COLUMN)[f.format])(n);
    let p = f.offset;
    switch (f.format) {
      case "|i1": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getInt8(p); break;
      case "|u1": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getUint8(p); break;
      case "|b1": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getUint8(p) ? 1 : 0; break;
      case "<i2": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getInt16(p, true); break;
      case "<u2": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getUint16(p, true); break;
      case "<i4": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getInt32(p, true); break;
      case "<u4": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getUint32(p, true); break;
      case "<i8": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getBigInt64(p, true); break;
      case "<u8": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getBigUint64(p, true); break;
      case "<f2": for (let i = 0; i < n; i++, p += stride) col[i] = half(dv.getUint16(p, true)); break;
      case "<f4": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getFloat32(p, true); break;
      case "<f8": for (let i = 0; i < n; i++, p += stride) col[i] = dv.getFloat64(p, true); break;
    }
    columns[f.name] = col;
  }
  return { count: n, columns };
}
