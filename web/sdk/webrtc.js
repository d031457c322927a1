// WebRTC for the browser SDK (docs/webrtc.md, protocol.md §6), the twin of netcode/rtc_client.py:
// the offer, candidates and voice controls go over the client's WebSocket; once the server says
// "up", snapshots arrive on the unordered data channel (id 0), events and errors on the reliable
// one (id 1), and inputs leave on them; on "down" (or if it never comes up) everything stays on
// the WebSocket. The same peer connection carries push-to-talk voice: the first audio section
// sends the microphone (and receives), the others only receive.

import { encode } from "./msgpack.js";

export const FAST_LABEL = "arbiter-u";
export const RELIABLE_LABEL = "arbiter-r";
export const MAX_VOICE_SLOTS = 4;

/** @param {string} sdp */
export const encodeOffer = (sdp) => encode({ t: "rtc_offer", sdp });
/** @param {string} c @param {string | null} mid @param {number | null} ml */
export function encodeCandidate(c, mid, ml) {
  /** @type {Record<string, any>} */
  const m = { t: "rtc_ice", c };
  if (mid !== null && mid !== undefined) m.mid = mid;
  if (ml !== null && ml !== undefined) m.ml = ml;
  return encode(m);
}
export const encodeRtcClose = () => encode({ t: "rtc_close" });
export const encodeTurnRequest = () => encode({ t: "turn" });
/** @param {boolean} on */
export const encodeTalk = (on) => encode({ t: "vc", talk: !!on });
/** @param {number} player @param {boolean} on */
export const encodeBlock = (player, on = true) => encode({ t: "vc", block: player, on: !!on });

/**
 * @typedef {Object} RtcOptions
 * @property {RTCIceServer[]} [ice]          ICE servers (the server's TURN credentials)
 * @property {boolean} [relayOnly]           iceTransportPolicy "relay": only through TURN
 * @property {MediaStreamTrack | null} [microphone]  sent while push-to-talk is held
 * @property {number} [voiceSlots]           audio streams to receive (0: no voice)
 * @property {number} [timeout]              seconds to wait for "up" (default 15)
 */

export class RtcLink {
  /**
   * @param {(bytes: Uint8Array) => void} sendWs   sends on the client's WebSocket
   * @param {(bytes: Uint8Array) => void} onFrame  a frame from a data channel, handled like one from the WebSocket
   * @param {RtcOptions} opts
   */
  constructor(sendWs, onFrame, opts = {}) {
    this.sendWs = sendWs;
    this.opts = opts;
    this.pc = new RTCPeerConnection({ iceServers: opts.ice || [], iceTransportPolicy: opts.relayOnly ? "relay" : "all" });
    this.fast = this.pc.createDataChannel(FAST_LABEL, { negotiated: true, id: 0, ordered: false, maxRetransmits: 0 });
    this.reliable = this.pc.createDataChannel(RELIABLE_LABEL, { negotiated: true, id: 1 });
    for (const ch of [this.fast, this.reliable]) {
      ch.binaryType = "arraybuffer";
      ch.onmessage = (ev) => {
        if (ev.data instanceof ArrayBuffer) { this.framesIn++; onFrame(new Uint8Array(ev.data)); }
      };
    }
    const slots = Math.min(MAX_VOICE_SLOTS, opts.voiceSlots || 0);
    this.microphone = opts.microphone || null;
    if (this.microphone) {
      this.microphone.enabled = false; // push-to-talk: silent until held
      this.pc.addTransceiver(this.microphone, { direction: "sendrecv" });
    } else if (slots) {
      this.pc.addTransceiver("audio", { direction: "recvonly" });
    }
    for (let i = 1; i < slots; i++) this.pc.addTransceiver("audio", { direction: "recvonly" });
    /** @type {HTMLAudioElement[]} */
    this.audio = [];
    this.pc.ontrack = (ev) => {
      if (ev.track.kind !== "audio" || typeof document === "undefined") return;
      const el = document.createElement("audio");
      el.autoplay = true;
      el.srcObject = new MediaStream([ev.track]);
      el.style.display = "none";
      document.body.appendChild(el);
      this.audio.push(el);
    };
    this.pc.onicecandidate = (ev) => {
      const c = ev.candidate;
      if (c && c.candidate) this.sendWs(encodeCandidate(c.candidate, c.sdpMid, c.sdpMLineIndex));
    };
    this.up = false;
    this.downReason = "";
    this.framesIn = 0;
    this.talking = false;
    /** @type {(up: boolean) => void} */
    this.settle = () => {};
    this.settled = new Promise((resolve) => { this.settle = resolve; });
  }

  /** Offer (candidates trickle after it); resolves true once up, false on "down" or the time-out. */
  async start() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    this.sendWs(encodeOffer(/** @type {RTCSessionDescription} */ (this.pc.localDescription).sdp));
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), (this.opts.timeout || 15) * 1000));
    const up = await Promise.race([this.settled, timeout]);
    if (up === null) {
      this.downReason = "no answer in time: staying on WebSocket";
      this.sendWs(encodeRtcClose());
      this.close();
      return false;
    }
    return /** @type {boolean} */ (up);
  }

  /** A signaling event from the session ("rtc_answer" or "rtc"). @param {any} ev */
  onSignal(ev) {
    if (ev.type === "rtc_answer") {
      this.pc.setRemoteDescription({ type: "answer", sdp: ev.sdp }).catch((e) => {
        this.downReason = `bad answer: ${e}`;
        this.settle(false);
      });
    } else if (ev.type === "rtc") {
      if (ev.state === "up") { this.up = true; this.settle(true); }
      else if (ev.state === "down") {
        this.up = false;
        this.downReason = ev.reason;
        this.settle(false);
        this.close();
      }
    }
  }

  /** Send on a data channel; false when WebRTC is not up (the caller uses the WebSocket).
   * @param {Uint8Array} bytes @param {boolean} reliable */
  send(bytes, reliable) {
    const ch = reliable ? this.reliable : this.fast;
    if (!this.up || ch.readyState !== "open") return false;
    ch.send(bytes);
    return true;
  }

  /** Push-to-talk: the microphone's track is enabled only while held. @param {boolean} on */
  talk(on) {
    this.talking = !!on;
    if (this.microphone) this.microphone.enabled = this.talking;
  }

  close() {
    this.up = false;
    for (const el of this.audio) el.remove();
    this.audio = [];
    try { this.pc.close(); } catch { /* already closed */ }
  }
}
