// The msgpack subset Arbiter's protocol needs (spec 2.0: str and bin apart), written for the
// browser SDK so that it needs no build step and no third-party code. Decoding accepts every
// msgpack type except ext; encoding writes maps, arrays, strings, bytes, ints, floats, bools, nil.

/** Thrown on bytes that are not one well-formed msgpack value. */
export class MsgpackError extends Error {}

/** A number to be written as a float32 (0xca), as the protocol's input thrust travels. */
export class F32 {
  /** @param {number} value */
  constructor(value) { this.value = value; }
}

/** @param {number} v @returns {F32} */
export const f32 = (v) => new F32(v);

const TEXT = new TextDecoder("utf-8", { fatal: true });
const UTF8 = new TextEncoder();
const MAX_DEPTH = 64;
const TWO32 = 4294967296;

/**
 * Decode one msgpack value; trailing bytes are an error.
 * Maps become objects without a prototype (string keys only); bin becomes a Uint8Array view of
 * `bytes` (no copy); 64-bit integers beyond 2^53 become BigInt.
 * @param {Uint8Array} bytes
 * @returns {any}
 */
export function decode(bytes) {
  const r = new Reader(bytes);
  const v = r.value(0);
  if (r.pos !== bytes.length) throw new MsgpackError("trailing bytes");
  return v;
}

class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.b = bytes;
    this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  /** @param {number} n */
  need(n) {
    if (this.pos + n > this.b.length) throw new MsgpackError("truncated");
    const p = this.pos;
    this.pos += n;
    return p;
  }

  /** @param {number} depth @returns {any} */
  value(depth) {
    if (depth > MAX_DEPTH) throw new MsgpackError("nested too deeply");
    const t = this.b[this.need(1)];
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t < 0x90) return this.map(t & 0x0f, depth);
    if (t < 0xa0) return this.array(t & 0x0f, depth);
    if (t < 0xc0) return this.str(t & 0x1f);
    const v = this.v;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(this.b[this.need(1)]);
      case 0xc5: return this.bin(v.getUint16(this.need(2)));
      case 0xc6: return this.bin(v.getUint32(this.need(4)));
      case 0xca: return v.getFloat32(this.need(4));
      case 0xcb: return v.getFloat64(this.need(8));
      case 0xcc: return this.b[this.need(1)];
      case 0xcd: return v.getUint16(this.need(2));
      case 0xce: return v.getUint32(this.need(4));
      case 0xcf: return big(v.getBigUint64(this.need(8)));
      case 0xd0: return v.getInt8(this.need(1));
      case 0xd1: return v.getInt16(this.need(2));
      case 0xd2: return v.getInt32(this.need(4));
      case 0xd3: return big(v.getBigInt64(this.need(8)));
      case 0xd9: return this.str(this.b[this.need(1)]);
      case 0xda: return this.str(v.getUint16(this.need(2)));
      case 0xdb: return this.str(v.getUint32(this.need(4)));
      case 0xdc: return this.array(v.getUint16(this.need(2)), depth);
      case 0xdd: return this.array(v.getUint32(this.need(4)), depth);
      case 0xde: return this.map(v.getUint16(this.need(2)), depth);
      case 0xdf: return this.map(v.getUint32(this.need(4)), depth);
      default: throw new MsgpackError(`unsupported type byte 0x${t.toString(16)}`);
    }
  }

  /** @param {number} n */
  str(n) {
    const p = this.need(n);
    try {
      return TEXT.decode(this.b.subarray(p, p + n));
    } catch {
      throw new MsgpackError("invalid UTF-8 in str");
    }
  }

  /** @param {number} n */
  bin(n) {
    const p = this.need(n);
    return this.b.subarray(p, p + n);
  }

  /** @param {number} n @param {number} depth */
  array(n, depth) {
    // Every element takes at least one byte: a hostile length cannot make us allocate more.
    if (n > this.b.length - this.pos) throw new MsgpackError("truncated");
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  /** @param {number} n @param {number} depth */
  map(n, depth) {
    if (2 * n > this.b.length - this.pos) throw new MsgpackError("truncated");
    const out = Object.create(null);
    for (let i = 0; i < n; i++) {
      const k = this.value(depth + 1);
      if (typeof k !== "string") throw new MsgpackError("map key is not a str");
      out[k] = this.value(depth + 1);
    }
    return out;
  }
}

/** @param {bigint} v @returns {number | bigint} */
function big(v) {
  return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
}

/**
 * Encode a value: objects become maps (keys in insertion order), Uint8Array bin, integers the
 * shortest msgpack int, other numbers float64, F32 float32.
 * @param {any} value
 * @returns {Uint8Array}
 */
export function encode(value) {
  const w = new Writer();
  w.value(value, 0);
  return w.bytes();
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  /** @param {number} n */
  room(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.pos));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }

  bytes() { return this.buf.slice(0, this.pos); }

  /** @param {number} b */
  u8(b) { this.room(1); this.buf[this.pos++] = b; }

  /** @param {number} t @param {number} n */
  head(t, n) {
    // t: the 8-bit form's type byte (0xc4 bin, 0xd9 str, ...) whose 16/32-bit forms follow it.
    this.room(5);
    const v = this.view;
    if (n < 0x100) { this.buf[this.pos++] = t; this.buf[this.pos++] = n; }
    else if (n < 0x10000) { this.buf[this.pos++] = t + 1; v.setUint16(this.pos, n); this.pos += 2; }
    else { this.buf[this.pos++] = t + 2; v.setUint32(this.pos, n); this.pos += 4; }
  }

  /** @param {any} x @param {number} depth */
  value(x, depth) {
    if (depth > MAX_DEPTH) throw new MsgpackError("nested too deeply");
    if (x === null || x === undefined) return this.u8(0xc0);
    if (x === true) return this.u8(0xc3);
    if (x === false) return this.u8(0xc2);
    if (typeof x === "number") return Number.isSafeInteger(x) ? this.int(x) : this.f64(x);
    if (typeof x === "bigint") return this.bigint(x);
    if (typeof x === "string") return this.str(x);
    if (x instanceof F32) {
      this.room(5);
      this.buf[this.pos++] = 0xca;
      this.view.setFloat32(this.pos, x.value);
      this.pos += 4;
      return;
    }
    if (x instanceof Uint8Array) {
      this.head(0xc4, x.length);
      this.room(x.length);
      this.buf.set(x, this.pos);
      this.pos += x.length;
      return;
    }
    if (Array.isArray(x)) {
      this.count(0x90, 0xdc, x.length);
      for (const e of x) this.value(e, depth + 1);
      return;
    }
    if (typeof x === "object") {
      const keys = Object.keys(x).filter((k) => x[k] !== undefined);
      this.count(0x80, 0xde, keys.length);
      for (const k of keys) { this.str(k); this.value(x[k], depth + 1); }
      return;
    }
    throw new MsgpackError(`cannot encode ${typeof x}`);
  }

  /** @param {number} fix @param {number} t16 @param {number} n */
  count(fix, t16, n) {
    this.room(5);
    if (n < 16) this.buf[this.pos++] = fix | n;
    else if (n < 0x10000) { this.buf[this.pos++] = t16; this.view.setUint16(this.pos, n); this.pos += 2; }
    else { this.buf[this.pos++] = t16 + 1; this.view.setUint32(this.pos, n); this.pos += 4; }
  }

  /** @param {string} s */
  str(s) {
    const b = UTF8.encode(s);
    if (b.length < 32) this.u8(0xa0 | b.length);
    else this.head(0xd9, b.length);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** @param {number} n */
  int(n) {
    this.room(9);
    const b = this.buf, v = this.view;
    if (n >= 0) {
      if (n < 0x80) b[this.pos++] = n;
      else if (n < 0x100) { b[this.pos++] = 0xcc; b[this.pos++] = n; }
      else if (n < 0x10000) { b[this.pos++] = 0xcd; v.setUint16(this.pos, n); this.pos += 2; }
      else if (n < TWO32) { b[this.pos++] = 0xce; v.setUint32(this.pos, n); this.pos += 4; }
      else { b[this.pos++] = 0xcf; v.setBigUint64(this.pos, BigInt(n)); this.pos += 8; }
    } else if (n >= -32) b[this.pos++] = n + 0x100;
    else if (n >= -0x80) { b[this.pos++] = 0xd0; v.setInt8(this.pos, n); this.pos += 1; }
    else if (n >= -0x8000) { b[this.pos++] = 0xd1; v.setInt16(this.pos, n); this.pos += 2; }
    else if (n >= -0x80000000) { b[this.pos++] = 0xd2; v.setInt32(this.pos, n); this.pos += 4; }
    else { b[this.pos++] = 0xd3; v.setBigInt64(this.pos, BigInt(n)); this.pos += 8; }
  }

  /** @param {bigint} n */
  bigint(n) {
    if (n >= -9007199254740991n && n <= 9007199254740991n) return this.int(Number(n));
    this.room(9);
    if (n > 0n) { this.buf[this.pos++] = 0xcf; this.view.setBigUint64(this.pos, n); }
    else { this.buf[this.pos++] = 0xd3; this.view.setBigInt64(this.pos, n); }
    this.pos += 8;
  }

  /** @param {number} x */
  f64(x) {
    this.room(9);
    this.buf[this.pos++] = 0xcb;
    this.view.setFloat64(this.pos, x);
    this.pos += 8;
  }
}
