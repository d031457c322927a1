// The browser client SDK: a WebSocket shell over the Sans-I/O ClientSession, like netcode/client.py.
//
//   const client = new ArbiterClient("ws://127.0.0.1:8765/", { name: "ada" });
//   client.on("snapshot", (snap) => draw(snap));
//   const welcome = await client.connect();
//   client.sendInput({ dx: 1, dy: 0 });
//
// It acknowledges every snapshot (the newest delta snapshot it holds rides on each input, and an
// input is sent after a snapshot if none went out since), pings once a second, and reconnects
// after a lost connection with the same name and a fresh token from `getToken`, keeping its input
// sequence so that a resumed ship takes the next input.

import { ClientSession } from "./session.js";
import { BYE_RELOCATE, ErrorCode, FINAL_CLOSE_CODES, ProtocolError } from "./protocol.js";
import { RtcLink, encodeBlock, encodeTalk, encodeTurnRequest } from "./webrtc.js";

/**
 * @typedef {Object} ClientOptions
 * @property {string} [name]         display name (and account without join tokens)
 * @property {string} [token]        join token (or an admin token to watch)
 * @property {() => Promise<{url?: string, token: string}>} [getToken]  fresh token (and URL) for each (re)connection
 * @property {boolean} [watch]       spectate: whole-world snapshots, no ship
 * @property {boolean} [reconnect]   reconnect after a lost connection (default true)
 * @property {number} [pingInterval] seconds between pings (default 1)
 * @property {() => number} [now]    clock in seconds (default performance.now() / 1000)
 */

/** A refusal from the server (its err code and message), or a lost connection (code 0). */
export class ServerError extends Error {
  /** @param {number} code @param {string} msg @param {number} [closeCode] */
  constructor(code, msg, closeCode = 0) {
    super(`server error ${code}: ${msg}`);
    this.code = code;
    this.msg = msg;
    this.closeCode = closeCode;
  }
}

export class ArbiterClient {
  /** @param {string} url @param {ClientOptions} [opts] */
  constructor(url, opts = {}) {
    this.url = url;
    this.opts = { name: "player", token: "", watch: false, reconnect: true, pingInterval: 1, ...opts };
    this.now = opts.now || (() => performance.now() / 1000);
    this.session = new ClientSession();
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {import("./session.js").Welcome | null} */
    this.welcome = null;
    /** @type {import("./session.js").Snapshot | null} */
    this.latest = null;
    this.connected = false;
    this.closedByUser = false;
    this.reconnects = 0;
    this.bytesIn = 0;
    this.snapshots = 0;
    this.inputsSinceSnapshot = 0;
    /** @type {Record<string, number>} */
    this.lastValues = {};
    /** @type {ServerError | null} */
    this.lastError = null;
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    this.pingTimer = 0;
    this.retryTimer = 0;
    this.backoff = 0.2;
    /** @type {RtcLink | null} */
    this.rtc = null; // the WebRTC path (startWebRTC); snapshots and inputs use it while `rtc.up`
    /** @type {number[]} */
    this.voiceSlots = []; // who speaks in each receiving audio section (0: nobody)
    /** @type {((payload: Uint8Array) => void) | null} */
    this.onFrame = null;
  }

  /**
   * Subscribe to "welcome", "snapshot", "events", "error", "pong", "bye", "info", "open",
   * "close" ({code, reason, willReconnect}), "protocol_error".
   * @param {string} type @param {Function} fn
   */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    /** @type {Set<Function>} */ (this.handlers.get(type)).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  /** @param {string} type @param {any} arg */
  emit(type, arg) {
    for (const fn of this.handlers.get(type) || []) {
      try { fn(arg); } catch (e) { console.error(e); }
    }
  }

  get player() { return this.welcome ? this.welcome.player : 0; }
  /** Smoothed round trip in seconds, or null before the first pong. */
  get rtt() { return this.session.rtt; }

  /** Open the connection and say hello; resolves with the welcome, rejects with a ServerError.
   * @returns {Promise<import("./session.js").Welcome>} */
  connect() {
    this.closedByUser = false;
    return new Promise((resolve, reject) => { this.open(resolve, reject); });
  }

  /** @param {(w: any) => void} [resolve] @param {(e: any) => void} [reject] */
  async open(resolve, reject) {
    let token = this.opts.token || "";
    let url = this.url;
    if (this.opts.getToken) {
      try {
        const got = await this.opts.getToken();
        token = got.token;
        if (got.url) url = this.url = got.url;
      } catch (e) {
        if (reject) reject(e); else this.scheduleReconnect();
        return;
      }
    }
    this.session.reset();
    this.lastError = null;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let welcomed = false;
    /** @type {string | null} */
    let byeReason = null; // the server's last word on this connection, if it said one
    ws.onopen = () => {
      ws.send(this.session.hello(this.opts.name || "player", token, !!this.opts.watch));
      this.emit("open", null);
    };
    /** One frame from the WebSocket or a WebRTC data channel: the same session, the same handling.
     * @param {Uint8Array} payload */
    const onFrame = (payload) => {
      this.bytesIn += payload.length;
      let events;
      try {
        events = this.session.receive(payload, this.now());
      } catch (e) {
        if (e instanceof ProtocolError) { this.emit("protocol_error", e); return; }
        throw e;
      }
      for (const e of events) {
        if (e.type === "welcome") {
          welcomed = true;
          this.connected = true;
          this.backoff = 0.2;
          const resumed = this.welcome !== null && this.welcome.player === e.player;
          this.welcome = e;
          this.startPings();
          this.emit("welcome", { ...e, resumed });
          if (resolve) { resolve(e); resolve = undefined; reject = undefined; }
        } else if (e.type === "snapshot") {
          this.snapshots++;
          this.latest = e;
          this.emit("snapshot", e);
          if (this.inputsSinceSnapshot === 0) this.sendInput(this.lastValues); // carries the ack
          this.inputsSinceSnapshot = 0;
        } else if (e.type === "error") {
          this.lastError = new ServerError(e.code, e.msg);
          this.emit("error", e);
        } else if (e.type === "rtc_answer" || e.type === "rtc") {
          if (this.rtc) this.rtc.onSignal(e);
          this.emit(e.type, e);
        } else if (e.type === "bye") {
          byeReason = e.reason;
          this.emit(e.type, e);
        } else if (e.type === "voice_slots") {
          this.voiceSlots = e.slots;
          this.emit(e.type, e);
        } else {
          this.emit(e.type, e);
        }
      }
    };
    this.onFrame = onFrame;
    ws.onmessage = (ev) => {
      if (!(ev.data instanceof ArrayBuffer)) return; // text frames are not part of the protocol
      onFrame(new Uint8Array(ev.data));
    };
    ws.onclose = (ev) => {
      this.connected = false;
      if (this.rtc) { this.rtc.close(); this.rtc = null; } // its peer belonged to this connection
      this.stopPings();
      if (this.ws === ws) this.ws = null;
      // As the Python SDK: rejoin after a drop without a bye, or a bye saying "relocate"; any other
      // bye (replaced by this account's newer connection, shutting down) is the server's answer.
      const final = FINAL_CLOSE_CODES.has(ev.code) || this.closedByUser
        || (byeReason !== null && byeReason !== BYE_RELOCATE);
      const willReconnect = !!this.opts.reconnect && !final && (welcomed || !reject);
      this.emit("close", { code: ev.code, reason: ev.reason, willReconnect, error: this.lastError });
      if (reject && !welcomed) {
        const err = this.lastError || new ServerError(0, `connection closed (${ev.code} ${ev.reason})`);
        err.closeCode = ev.code;
        reject(err);
        return;
      }
      if (willReconnect) this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (this.closedByUser || this.retryTimer) return;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 3);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      this.reconnects++;
      this.open();
    }, delay * 1000);
  }

  startPings() {
    this.stopPings();
    this.ping();
    this.pingTimer = setInterval(() => this.ping(), (this.opts.pingInterval || 1) * 1000);
  }

  stopPings() {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = 0;
  }

  ping() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(this.session.ping(this.now()));
  }

  /**
   * Send one input (the game's input keys, e.g. {dx, dy, a, g}); returns its sequence number,
   * or 0 when not connected. `clientTick` defaults to the newest server tick seen.
   * @param {Record<string, number>} values @param {number} [clientTick]
   */
  sendInput(values, clientTick) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.welcome) return 0;
    const bytes = this.session.input(values, clientTick);
    // The welcome's spec names the move keys; any other non-zero key is an action. Over WebRTC the
    // move takes the unreliable channel (the next input supersedes a lost one); an action must
    // arrive, so it takes the reliable one.
    const move = moveKeys(this.welcome);
    /** @type {Record<string, number>} */
    const held = {};
    let action = false;
    for (const [k, v] of Object.entries(values)) {
      if (move.includes(k)) held[k] = v;
      else if (v) action = true;
    }
    if (!this.rtc || !this.rtc.send(bytes, action)) ws.send(bytes);
    this.inputsSinceSnapshot++;
    // Actions are one-shot; the move is held by the server and repeated with acks.
    this.lastValues = held;
    return this.session.seq;
  }

  /** Send raw bytes on the WebSocket (signaling, voice controls). @param {Uint8Array} bytes */
  sendWs(bytes) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  /** The server's ICE servers with fresh TURN credentials; null when it runs no WebRTC relay.
   * @param {number} [timeout] seconds @returns {Promise<RTCIceServer[] | null>} */
  requestTurn(timeout = 5) {
    return new Promise((resolve) => {
      const done = (/** @type {RTCIceServer[] | null} */ v) => { offTurn(); offErr(); clearTimeout(t); resolve(v); };
      const offTurn = this.on("turn", (/** @type {any} */ e) => done(e.ice));
      const offErr = this.on("error", (/** @type {any} */ e) => { if (e.code === ErrorCode.RTC_UNAVAILABLE) done(null); });
      const t = setTimeout(() => done(null), timeout * 1000);
      this.sendWs(encodeTurnRequest());
    });
  }

  /**
   * Move snapshots and inputs to WebRTC data channels (and join voice); resolves with the link
   * (`link.up` false: the client stays on its WebSocket, `link.downReason` says why), or null
   * when the server runs no WebRTC relay.
   * @param {import("./webrtc.js").RtcOptions} [opts]
   * @returns {Promise<RtcLink | null>}
   */
  async startWebRTC(opts = {}) {
    const ice = opts.ice || await this.requestTurn();
    if (ice === null || !this.ws) return null;
    if (this.rtc) this.rtc.close();
    const link = new RtcLink((b) => this.sendWs(b), (b) => this.onFrame && this.onFrame(b), { ...opts, ice });
    this.rtc = link;
    await link.start();
    return link;
  }

  /** Push-to-talk pressed or released: the server forwards the microphone only while on. @param {boolean} on */
  talk(on) {
    if (this.rtc) this.rtc.talk(on);
    this.sendWs(encodeTalk(on));
  }

  /** Stop (or resume) hearing a player. @param {number} player @param {boolean} [on] */
  block(player, on = true) { this.sendWs(encodeBlock(player, on)); }

  /** Close for good (no reconnect). */
  close() {
    this.closedByUser = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.stopPings();
    if (this.rtc) { this.rtc.close(); this.rtc = null; }
    if (this.ws) this.ws.close(1000, "bye");
  }
}


/** The input keys of the welcome's move rule (spec.move.in): what an input holds, not does.
 * @param {import("./session.js").Welcome} welcome @returns {string[]} */
function moveKeys(welcome) {
  const move = welcome.spec && welcome.spec.move;
  return move && move.rule !== "none" && Array.isArray(move.in) ? move.in : [];
}
