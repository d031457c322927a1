// /play: log in (hub, pasted token, or guest), then play with keyboard or touch.
// URL parameters for links and tests: ?name=NAME&auto=1 joins at once; #token=TOKEN (a fragment
// never reaches a server log) pre-fills the join token. On a server with WebRTC relay workers the
// page moves to data channels after joining (?webrtc=0: stay on WebSocket; ?relay=1: through TURN
// only) and, with "voice chat" ticked (?voice=1), talks while T or the talk button is held.

import { ArbiterClient } from "./sdk/client.js";
import { ErrorCode } from "./sdk/protocol.js";
import { GameView } from "./sdk/view.js";
import { hubJoin } from "./hub.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const config = await (await fetch("/web/config.json", { cache: "no-store" })).json();
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${config.ws || "/"}`;

/** What the page shows and tests read (window.arbiter). */
const state = {
  /** @type {ArbiterClient | null} */ client: null,
  /** @type {GameView | null} */ view: null,
  resources: /** @type {Record<string, number>} */ ({}),
  achievements: /** @type {string[]} */ ([]),
  warnings: /** @type {string[]} */ ([]),
  closes: 0,
  welcomes: 0,
  /** @type {import("./sdk/webrtc.js").RtcLink | null} */ rtc: null,
  transport: "websocket",
};
// @ts-ignore: the page's state, for the console and the tests
window.arbiter = state;

// ---------------------------------------------------------------------------------- login panel
const form = /** @type {HTMLFormElement} */ ($("login"));
if (config.hub) { $("login-hub").classList.remove("hidden"); $("login-guest").classList.add("hidden"); }
else if (config.tokens) $("login-token").classList.remove("hidden");
const nameInput = /** @type {HTMLInputElement} */ ($("name"));
const tokenInput = /** @type {HTMLInputElement} */ ($("token"));
if (params.get("name")) nameInput.value = String(params.get("name")).slice(0, 32);
if (fragment.get("token")) tokenInput.value = String(fragment.get("token"));
if (config.webrtc) $("login-voice").classList.remove("hidden");
if (params.get("voice") === "1") /** @type {HTMLInputElement} */ ($("voice")).checked = true;
form.classList.remove("hidden");
form.addEventListener("submit", (ev) => { ev.preventDefault(); join(); });
if (params.get("auto")) join();

async function join() {
  $("login-status").textContent = "connecting…";
  /** @type {import("./sdk/client.js").ClientOptions} */
  const opts = { name: nameInput.value.trim() || "guest" };
  if (config.hub) {
    const login = { username: /** @type {HTMLInputElement} */ ($("user")).value, password: /** @type {HTMLInputElement} */ ($("password")).value };
    opts.name = login.username || "player";
    opts.getToken = () => hubJoin(config.hub, config.campaign, login);
  } else if (tokenInput.value.trim()) {
    opts.token = tokenInput.value.trim();
  }
  const client = new ArbiterClient(wsUrl, opts);
  const view = new GameView(/** @type {HTMLCanvasElement} */ ($("view")), client);
  state.client = client;
  state.view = view;
  wire(client);
  try {
    await client.connect();
  } catch (e) {
    const err = /** @type {any} */ (e);
    $("login-status").textContent = err.msg ? `refused: ${err.msg} (${err.code})` : String(err.message || err);
    client.close();
    return;
  }
  form.classList.add("hidden");
  $("hud").classList.remove("hidden");
  setupInput(view);
  view.start(hud);
  if (config.webrtc && params.get("webrtc") !== "0") startWebRTC(client);
  client.on("welcome", () => { if (config.webrtc && params.get("webrtc") !== "0" && !client.rtc) startWebRTC(client); });
}

// ---------------------------------------------------------------------------------- WebRTC, voice
/** Move to data channels; with voice, ask for the microphone first (sent only while T is held). @param {ArbiterClient} client */
async function startWebRTC(client) {
  let microphone = null;
  const voice = /** @type {HTMLInputElement} */ ($("voice")).checked;
  if (voice && navigator.mediaDevices) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      microphone = stream.getAudioTracks()[0] || null;
    } catch (e) {
      warn(`no microphone: ${e}`);
    }
  }
  state.transport = "websocket (connecting WebRTC…)";
  const link = await client.startWebRTC({ relayOnly: params.get("relay") === "1", microphone, voiceSlots: voice ? 4 : 0 });
  state.rtc = link;
  state.transport = link && link.up ? `webrtc${params.get("relay") === "1" ? " (TURN)" : ""}` : "websocket";
  if (link && link.up && microphone) $("talk").classList.remove("hidden");
}

/** @param {boolean} on */
function talk(on) {
  const c = state.client;
  if (!c || !c.rtc || !c.rtc.microphone || c.rtc.talking === on) return;
  c.talk(on);
  $("talk").classList.toggle("on", on);
}

/** @param {ArbiterClient} client */
function wire(client) {
  client.on("welcome", (/** @type {any} */ w) => {
    state.welcomes++;
    $("hud-title").textContent = `${w.game} · ${client.opts.name}${w.resumed ? " (resumed)" : ""}`;
    legend(w);
  });
  client.on("events", (/** @type {any} */ ev) => {
    const names = (client.welcome && client.welcome.spec && client.welcome.spec.events) || { 1: "achievement", 2: "balance" };
    for (const [kind, a, b] of ev.events) {
      const name = names[String(kind)];
      if (name === "balance") state.resources[`resource ${a}`] = b;
      else if (name === "achievement") state.achievements.push(`#${a}`);
    }
  });
  client.on("error", (/** @type {any} */ e) => {
    if (e.code === ErrorCode.WARNED || e.code === ErrorCode.BANNED) warn(`fair play: ${e.msg}`);
  });
  client.on("rtc", (/** @type {any} */ e) => {
    if (e.state === "down") { state.transport = `websocket (${e.reason})`; $("talk").classList.add("hidden"); }
  });
  client.on("close", (/** @type {any} */ c) => {
    state.closes++;
    if (c.code === 4005 || c.code === 4007) warn(`${c.code === 4007 ? "banned" : "kicked"}: ${c.reason || "fair play"}`);
  });
}

/** @param {string} text */
function warn(text) {
  state.warnings.push(text);
  const el = $("warning");
  el.textContent = text;
  el.classList.remove("hidden");
  setTimeout(() => el.classList.add("hidden"), 8000);
}

/** @param {any} w */
function legend(w) {
  const actions = (w.spec && w.spec.actions) || {};
  const keys = Object.keys(actions).map(Number).sort((a, b) => a - b).slice(0, 9);
  $("hud-legend").textContent = ["move: arrows / WASD", ...keys.map((k, i) => `${i + 1}: ${actions[String(k)]}`)].join(" · ");
  const touch = $("touch");
  touch.replaceChildren(...keys.map((k) => {
    const b = document.createElement("button");
    b.textContent = String(actions[String(k)]).slice(0, 8);
    b.addEventListener("touchstart", (ev) => { ev.preventDefault(); action(k); });
    return b;
  }));
  if ("ontouchstart" in window) touch.classList.remove("hidden");
}

// ---------------------------------------------------------------------------------- input
const keys = new Set();
let touchVec = /** @type {[number, number] | null} */ (null);
let lastSent = "";

/** @param {number} a */
function action(a) {
  state.view && state.view.sendInput({ ...move(), a });
}

function move() {
  const w = state.client && state.client.welcome;
  const [kx, ky] = (w && w.spec && w.spec.move && Array.isArray(w.spec.move.in)) ? w.spec.move.in : ["dx", "dy"];
  let dx = 0, dy = 0;
  if (touchVec) [dx, dy] = touchVec;
  else {
    if (keys.has("ArrowLeft") || keys.has("KeyA")) dx -= 1;
    if (keys.has("ArrowRight") || keys.has("KeyD")) dx += 1;
    if (keys.has("ArrowUp") || keys.has("KeyW")) dy -= 1;
    if (keys.has("ArrowDown") || keys.has("KeyS")) dy += 1;
  }
  const len = Math.hypot(dx, dy);
  // The sims refuse dx² + dy² > 1: a diagonal is scaled down (a hair inside, for float32).
  if (len > 1) { dx = (dx / len) * 0.9999999; dy = (dy / len) * 0.9999999; }
  return { [kx]: dx, [ky]: dy };
}

function sendMove() {
  const m = move();
  const key = JSON.stringify(m);
  if (key === lastSent || !state.view) return;
  lastSent = key;
  state.view.sendInput(m);
}

/** @param {GameView} view */
function setupInput(view) {
  const moveKeys = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "KeyA", "KeyD", "KeyW", "KeyS"]);
  window.addEventListener("keydown", (ev) => {
    if (moveKeys.has(ev.code)) { keys.add(ev.code); ev.preventDefault(); sendMove(); return; }
    if (ev.code === "KeyT") { talk(true); return; }
    const d = /^Digit([1-9])$/.exec(ev.code);
    const w = view.client.welcome;
    if (d && w && w.spec && w.spec.actions) {
      const ids = Object.keys(w.spec.actions).map(Number).sort((a, b) => a - b);
      const id = ids[Number(d[1]) - 1];
      if (id !== undefined) action(id);
    }
  });
  window.addEventListener("keyup", (ev) => {
    if (ev.code === "KeyT") { talk(false); return; }
    keys.delete(ev.code);
    sendMove();
  });
  window.addEventListener("blur", () => { keys.clear(); sendMove(); talk(false); });
  const talkButton = $("talk");
  talkButton.addEventListener("pointerdown", (ev) => { ev.preventDefault(); talk(true); });
  for (const t of ["pointerup", "pointercancel", "pointerleave"]) talkButton.addEventListener(t, () => talk(false));
  // Touch: drag anywhere on the canvas; the vector from where the finger went down is the thrust.
  const canvas = view.canvas;
  let origin = /** @type {[number, number] | null} */ (null);
  canvas.addEventListener("pointerdown", (ev) => { origin = [ev.clientX, ev.clientY]; canvas.setPointerCapture(ev.pointerId); });
  canvas.addEventListener("pointermove", (ev) => {
    if (!origin) return;
    const r = Math.min(canvas.clientWidth, canvas.clientHeight) / 6;
    touchVec = [Math.max(-1, Math.min(1, (ev.clientX - origin[0]) / r)), Math.max(-1, Math.min(1, (ev.clientY - origin[1]) / r))];
    sendMove();
  });
  const end = () => { origin = null; touchVec = null; sendMove(); };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

// ---------------------------------------------------------------------------------- HUD
let hudAt = 0;
function hud() {
  const now = performance.now();
  if (now - hudAt < 250) return;
  hudAt = now;
  const c = state.client, v = state.view;
  if (!c || !v) return;
  const w = c.welcome;
  $("hud-state").textContent = c.connected ? "connected" : `reconnecting (${c.reconnects})`;
  $("hud-ping").textContent = c.rtt === null ? "-" : `${(c.rtt * 1000).toFixed(0)} ms`;
  $("hud-tick").textContent = c.latest ? String(c.latest.tick) : "-";
  $("hud-rates").textContent = w ? `${w.tickRate} Hz tick · ${w.sendRate} Hz snapshots` : "-";
  $("hud-visible").textContent = String(v.visible);
  $("hud-pos").textContent = v.own ? `${v.own.x.toFixed(1)}, ${v.own.y.toFixed(1)}` : "-";
  $("hud-transport").textContent = c.rtc && c.rtc.up ? state.transport : state.transport.startsWith("webrtc") ? "websocket" : state.transport;
  const speakers = c.voiceSlots.filter((e) => e).length;
  $("hud-voice").textContent = !c.rtc || !c.rtc.up ? "-" : `${c.rtc.talking ? "talking" : c.rtc.microphone ? "hold T to talk" : "listening"}${speakers ? ` · hearing ${speakers}` : ""}`;
  const li = (/** @type {string} */ t) => { const e = document.createElement("li"); e.textContent = t; return e; };
  $("hud-resources").replaceChildren(...Object.entries(state.resources).map(([k, n]) => li(`${k}: ${n}`)));
  $("hud-achievements").replaceChildren(...state.achievements.slice(-8).map(li));
}
