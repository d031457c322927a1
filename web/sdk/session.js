// Client-side protocol state machine (Sans-I/O), a port of netcode/client_session.py: the caller
// sends the bytes `hello` / `input` / `ping` return and feeds every received frame to `receive`.

import {
  ErrorCode, FALLBACK_INPUTS, PROTOCOL_VERSION, ProtocolError, UINT32_MAX, decodeRecords, encodeHello,
  encodeInput, encodePing, parseDtype, reqFloat, reqInt, reqStr, unpackMap,
} from "./protocol.js";
import { ReplicationDecoder, parseSchema } from "./replication.js";

const U64 = 0xffffffffffffffffn;
/** Same smoothing as TCP's SRTT (RFC 6298), like the Python SDK. */
export const RTT_ALPHA = 0.125;

/**
 * @typedef {Object} Welcome
 * @property {"welcome"} type
 * @property {number} player   own entity id (0: a spectator, no ship)
 * @property {number} tick
 * @property {number} tickRate
 * @property {number} sendRate
 * @property {string} game
 * @property {Record<string, number|string>} world
 * @property {import("./protocol.js").Dtype} dtype
 * @property {import("./replication.js").Schema | null} schema  delta snapshots' schema (null: raw)
 * @property {number} aoi        view radius (0: whole world)
 * @property {any} spec          the game's spec (contract 1), or null from a server without one
 * @property {Array<[string, string, number, number]>} inputs  spec.inputs or the fallback
 * @property {number} ackSeq     newest input of this ship the server had applied (a resumed ship's)
 */

/**
 * @typedef {Object} Snapshot
 * @property {"snapshot"} type
 * @property {number} tick
 * @property {number} ackSeq   newest of this client's inputs the server had processed
 * @property {number} count
 * @property {Uint32Array} ids
 * @property {Record<string, any>} fields  typed column per field name (raw: the dtype's; delta: the schema's, dequantized float64)
 * @property {Int32Array | null} q         delta snapshots: quantized values, count × F, row-major
 */

/**
 * @typedef {{type: "events", tick: number, events: Array<[number, number, number]>}} Events
 * @typedef {{type: "error", code: number, msg: string}} ErrorMsg
 * @typedef {{type: "pong", rtt: number, serverTimeMs: number, tick: number}} Pong
 * @typedef {{type: "bye", reason: string}} Bye
 * @typedef {{type: "info"} & Record<string, any>} Info   spectators' once-a-second figures ("st")
 * @typedef {{type: "rtc_answer", sdp: string} | {type: "rtc", state: string, reason: string}} RtcSignal
 * @typedef {{type: "turn", ice: RTCIceServer[], ttl: number} | {type: "voice_slots", slots: number[]}} RtcInfo
 * @typedef {Welcome | Snapshot | Events | ErrorMsg | Pong | Bye | Info | RtcSignal | RtcInfo} ClientEvent
 */

export class ClientSession {
  constructor() {
    this.seq = 0; // last input seq sent; the first input carries 1
    /** @type {Welcome | null} */
    this.welcome = null;
    this.lastTick = 0; // newest server tick seen in a welcome or snapshot
    this.lastAckSeq = 0; // newest input seq the server reported processed
    /** @type {number | null} */
    this.rtt = null; // EWMA of ping round trips, in the caller's unit
    this.closed = false;
    /** @type {ReplicationDecoder | null} */
    this.decoder = null;
  }

  /** Forget the connection's state (a new connection); keeps `seq`, so a resumed ship accepts the next input. */
  reset() {
    const seq = this.seq;
    Object.assign(this, new ClientSession());
    this.seq = seq;
  }

  /** @param {string} name @param {string} [token] @param {boolean} [watch] */
  hello(name, token = "", watch = false) { return encodeHello(name, token, watch); }

  /**
   * Encode the next input. `clientTick` defaults to the newest server tick seen; the newest
   * delta snapshot held travels as `ack` (the server's next baseline).
   * @param {Record<string, number>} values @param {number} [clientTick]
   */
  input(values, clientTick) {
    // Never at or below what the server has applied: a resumed ship continues after its earlier inputs.
    this.seq = (Math.max(this.seq, this.lastAckSeq) + 1) % (UINT32_MAX + 1);
    const ct = clientTick === undefined ? this.lastTick % (UINT32_MAX + 1) : clientTick;
    const ack = this.decoder && this.decoder.ack ? this.decoder.ack : undefined;
    const inputs = this.welcome ? this.welcome.inputs : FALLBACK_INPUTS;
    return encodeInput(this.seq, ct, values, inputs, ack);
  }

  /** @param {number} now */
  ping(now) { return encodePing(now); }

  /**
   * Decode one frame into events; ProtocolError for a frame that violates the protocol.
   * @param {Uint8Array} payload @param {number} now
   * @returns {ClientEvent[]}
   */
  receive(payload, now) {
    const m = unpackMap(payload);
    switch (m.t) {
      case "s": return [this.snapshot(m)];
      case "d": return this.delta(m);
      case "ev": return [events(m)];
      case "pong": return [this.pong(m, now)];
      case "welcome": return [this.parseWelcome(m)];
      case "err": return [{ type: "error", code: reqInt(m, "code", -(2 ** 53), 2 ** 53), msg: reqStr(m, "msg") }];
      case "bye":
        this.closed = true;
        return [{ type: "bye", reason: reqStr(m, "reason") }];
      case "st": return [{ ...m, type: "info" }];
      // WebRTC signaling and voice (protocol.md §6, ./webrtc.js)
      case "rtc_answer": return [{ type: "rtc_answer", sdp: reqStr(m, "sdp") }];
      case "rtc": return [{ type: "rtc", state: reqStr(m, "state"), reason: reqStr(m, "reason") }];
      case "turn": {
        if (!Array.isArray(m.ice)) throw new ProtocolError(ErrorCode.BAD_FIELD, '"ice" must be a list of maps');
        return [{ type: "turn", ice: m.ice, ttl: Number(reqInt(m, "ttl", 0, UINT32_MAX)) }];
      }
      case "vs": {
        if (!Array.isArray(m.s) || !m.s.every((e) => typeof e === "number")) throw new ProtocolError(ErrorCode.BAD_FIELD, '"s" must be a list of ints');
        return [{ type: "voice_slots", slots: m.s }];
      }
      default: throw new ProtocolError(ErrorCode.UNKNOWN_TYPE, `unknown message type ${JSON.stringify(m.t)}`);
    }
  }

  /** @param {Record<string, any>} m @returns {Snapshot} */
  snapshot(m) {
    const w = this.welcome;
    if (w === null) throw new ProtocolError(ErrorCode.NOT_READY, "snapshot before welcome");
    const tick = reqInt(m, "k", 0, U64);
    const ack = reqInt(m, "a", 0, UINT32_MAX);
    if (!(m.e instanceof Uint8Array)) throw new ProtocolError(ErrorCode.BAD_FIELD, '"e" must be bin');
    const { count, columns } = decodeRecords(m.e, w.dtype);
    this.seen(tick, ack);
    return { type: "snapshot", tick: Number(tick), ackSeq: ack, count, ids: columns.id, fields: columns, q: null };
  }

  /** @param {Record<string, any>} m @returns {Snapshot[]} */
  delta(m) {
    const dec = this.decoder;
    if (dec === null) throw new ProtocolError(ErrorCode.NOT_READY, "delta snapshot before a welcome announcing them");
    const nums = ["k", "b", "a"].map((k) => {
      const v = m[k];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new ProtocolError(ErrorCode.BAD_FIELD, `delta frame: bad '${k}'`);
      return v;
    });
    if (!(m.e instanceof Uint8Array)) throw new ProtocolError(ErrorCode.BAD_FIELD, "delta frame: bad 'e'");
    const [tick, baseline, ack] = nums;
    if (!dec.apply(tick, baseline, m.e)) return []; // baseline unknown: the next delta repairs us
    this.seen(tick, ack);
    if (tick !== dec.tick) return []; // an older snapshot arriving late: kept as a baseline, not shown
    /** @type {Record<string, any>} */
    const fields = Object.create(null);
    fields.id = dec.ids;
    for (const name of dec.schema.names) fields[name] = dec.values(name);
    return [{ type: "snapshot", tick, ackSeq: ack, count: dec.ids.length, ids: dec.ids, fields, q: dec.q }];
  }

  /** @param {number} tick @param {number} ack */
  seen(tick, ack) {
    if (tick > this.lastTick) this.lastTick = Number(tick);
    if (ack > this.lastAckSeq) this.lastAckSeq = ack;
  }

  /** @param {Record<string, any>} m @param {number} now @returns {Pong} */
  pong(m, now) {
    const sample = now - reqFloat(m, "c");
    this.rtt = this.rtt === null ? sample : this.rtt + RTT_ALPHA * (sample - this.rtt);
    return { type: "pong", rtt: sample, serverTimeMs: reqFloat(m, "s"), tick: Number(reqInt(m, "k", 0, U64)) };
  }

  /** @param {Record<string, any>} m @returns {Welcome} */
  parseWelcome(m) {
    const v = reqInt(m, "v", 0, U64);
    if (v !== PROTOCOL_VERSION) throw new ProtocolError(ErrorCode.VERSION_MISMATCH, `server speaks v${v}, client v${PROTOCOL_VERSION}`);
    const world = m.world;
    if (world === null || typeof world !== "object" || Array.isArray(world)) throw new ProtocolError(ErrorCode.BAD_FIELD, '"world" must be a map');
    const dtype = parseDtype(m.dtype);
    let schema = null, aoi = 0;
    const rep = m.rep;
    if (rep !== undefined && rep !== null) {
      if (typeof rep !== "object" || rep.mode !== "delta") throw new ProtocolError(ErrorCode.BAD_FIELD, '"rep" must announce mode "delta"');
      try {
        schema = parseSchema(rep.schema);
      } catch (e) {
        throw new ProtocolError(ErrorCode.BAD_FIELD, `bad replication schema: ${/** @type {Error} */ (e).message}`);
      }
      aoi = typeof rep.aoi === "number" ? rep.aoi : 0;
    }
    const spec = m.spec && typeof m.spec === "object" ? m.spec : null;
    /** @type {Welcome} */
    const w = {
      type: "welcome",
      player: reqInt(m, "player", 0, UINT32_MAX),
      tick: Number(reqInt(m, "tick", 0, U64)),
      tickRate: reqInt(m, "tick_rate", 1, 100000),
      sendRate: reqInt(m, "send_rate", 1, 100000),
      game: reqStr(m, "game"),
      world, dtype, schema, aoi, spec,
      inputs: specInputs(spec),
      ackSeq: "a" in m ? reqInt(m, "a", 0, UINT32_MAX) : 0,
    };
    this.welcome = w;
    if (w.ackSeq > this.lastAckSeq) this.lastAckSeq = w.ackSeq;
    this.decoder = schema ? new ReplicationDecoder(schema) : null;
    this.lastTick = Math.max(this.lastTick, w.tick);
    return w;
  }
}

/** @param {any} spec @returns {Array<[string, string, number, number]>} */
function specInputs(spec) {
  const ins = spec && spec.inputs;
  if (!Array.isArray(ins)) return FALLBACK_INPUTS;
  const out = [];
  for (const i of ins) {
    if (Array.isArray(i) && i.length === 4 && typeof i[0] === "string" && ["f32", "i32", "u32"].includes(i[1])
        && typeof i[2] === "number" && typeof i[3] === "number" && i[2] <= i[3]) {
      out.push(/** @type {[string, string, number, number]} */ (i));
    }
  }
  return out.length ? out : FALLBACK_INPUTS;
}

/** @param {Record<string, any>} m @returns {Events} */
function events(m) {
  const tick = Number(reqInt(m, "k", 0, U64));
  if (!Array.isArray(m.ev)) throw new ProtocolError(ErrorCode.BAD_FIELD, '"ev" must be an array');
  /** @type {Array<[number, number, number]>} */
  const out = [];
  for (const e of m.ev) {
    if (!Array.isArray(e) || e.length !== 3 || !e.every((x) => typeof x === "number" ? Number.isInteger(x) : typeof x === "bigint")) {
      throw new ProtocolError(ErrorCode.BAD_FIELD, "event must be [kind, a, b] ints");
    }
    out.push([Number(e[0]), Number(e[1]), Number(e[2])]);
  }
  return { type: "events", tick, events: out };
}
