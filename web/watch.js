// /watch: the spectator view (a live campaign, whole map) and, with ?replay=ID, the replay viewer.
// Live: an admin token in the URL fragment (#token=...) or the form; none is needed when the
// server runs with --watch-public. Replay: served by `arbiter replay DIR --serve`.

import { ArbiterClient } from "./sdk/client.js";
import { decode } from "./sdk/msgpack.js";
import { ClientSession } from "./sdk/session.js";
import { Renderer } from "./sdk/render.js";
import { GameView } from "./sdk/view.js";
import { campaignPrefix } from "./campaign.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const canvas = /** @type {HTMLCanvasElement} */ ($("view"));
const li = (/** @type {string} */ t) => { const e = document.createElement("li"); e.textContent = t; return e; };
const kb = (/** @type {number} */ b) => `${(b / 1024).toFixed(1)} KiB/s`;

/** What the page shows and tests read (window.arbiter). */
const state = /** @type {Record<string, any>} */ ({ mode: params.get("replay") ? "replay" : "live" });
// @ts-ignore: the page's state, for the console and the tests
window.arbiter = state;

if (state.mode === "replay") replay(String(params.get("replay")));
else live();

// ---------------------------------------------------------------------------------- live
async function live() {
  const config = await (await fetch(`${campaignPrefix()}/web/config.json`, { cache: "no-store" })).json();
  const form = /** @type {HTMLFormElement} */ ($("login"));
  const tokenInput = /** @type {HTMLInputElement} */ ($("token"));
  tokenInput.value = fragment.get("token") || "";
  form.addEventListener("submit", (ev) => { ev.preventDefault(); watch(config, tokenInput.value.trim()); });
  if (tokenInput.value || config.watch_public) watch(config, tokenInput.value);
  else form.classList.remove("hidden");
}

/** @param {any} config @param {string} token */
async function watch(config, token) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${config.ws || "/"}`;
  const client = new ArbiterClient(url, { name: "spectator", token, watch: true });
  const view = new GameView(canvas, client);
  Object.assign(state, { client, view, info: null, refused: null });
  client.on("info", (/** @type {any} */ info) => {
    state.info = info;
    if (view.renderer) view.renderer.names = new Map(info.players.map((/** @type {[number, string]} */ p) => [p[0], p[1]]));
  });
  try {
    await client.connect();
  } catch (e) {
    const err = /** @type {any} */ (e);
    state.refused = err.code || err.closeCode || -1;
    $("login-status").textContent = err.msg ? `refused: ${err.msg} (${err.code})` : `refused: ${err.message}`;
    $("login").classList.remove("hidden");
    client.close();
    return;
  }
  $("login").classList.add("hidden");
  $("hud").classList.remove("hidden");
  $("side").classList.remove("hidden");
  let at = 0, bytes = 0, rate = 0;
  view.start(() => {
    const now = performance.now();
    if (now - at < 500) return;
    if (at) rate = ((client.bytesIn - bytes) * 1000) / (now - at);
    at = now;
    bytes = client.bytesIn;
    const w = client.welcome, info = state.info;
    $("hud-title").textContent = `${w ? w.game : "?"} · watch`;
    $("hud-state").textContent = client.connected ? "live" : `reconnecting (${client.reconnects})`;
    $("hud-tick").textContent = client.latest ? String(client.latest.tick) : "-";
    $("hud-visible").textContent = String(view.visible);
    $("hud-in").textContent = kb(rate);
    if (!info) return;
    $("hud-hz").textContent = `${Number(info.tick_hz).toFixed(1)} Hz`;
    $("hud-p99").textContent = `${Number(info.tick_p99_ms).toFixed(2)} ms`;
    $("hud-ccu").textContent = String(info.ccu);
    $("hud-out").textContent = kb(info.bytes_out_s);
    $("players").replaceChildren(...info.players.slice(0, 30).map((/** @type {[number, string]} */ p) => li(p[1])));
    $("decisions").replaceChildren(...(info.decisions.length ? info.decisions : [[0, "none yet", ""]]).map(
      (/** @type {[number, string, string]} */ d) => li(d[0] ? `${new Date(d[0] * 1000).toLocaleTimeString()} ${d[1]} ${d[2]}` : d[1])));
  });
}

// ---------------------------------------------------------------------------------- replay
/** @param {string} id */
async function replay(id) {
  const base = `/replay/${encodeURIComponent(id)}`;
  const get = async (/** @type {string} */ path) => {
    const r = await fetch(base + path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return decode(new Uint8Array(await r.arrayBuffer()));
  };
  const meta = await get("/meta");
  const step = Math.max(1, Number(params.get("step")) || meta.step);
  const first = Math.max(meta.first, Number(params.get("from")) || meta.first);
  const last = Math.min(meta.last, Number(params.get("to")) || meta.last);
  // The header is a welcome in all but name: the SDK's session decodes it and then every frame.
  const session = new ClientSession();
  const welcome = session.parseWelcome({ v: 1, player: 0, tick: first, tick_rate: meta.tick_rate,
    send_rate: Math.max(1, Math.round(meta.tick_rate / step)), game: meta.game, world: meta.world, dtype: meta.dtype });
  const renderer = new Renderer(canvas, welcome);
  const count = Math.floor((last - first) / step) + 1; // until a short chunk says otherwise
  /** @type {Map<number, any>} frame index -> snapshot */
  const frames = new Map();
  const loading = new Set();
  const CHUNK = 120;
  const load = async (/** @type {number} */ index) => {
    const c = Math.floor(index / CHUNK) * CHUNK;
    if (loading.has(c) || c >= state.count) return;
    loading.add(c);
    const n = Math.min(CHUNK, state.count - c);
    let got;
    try {
      got = await get(`/frames?from=${first + c * step}&n=${n}&step=${step}`);
    } catch (e) {
      loading.delete(c); // asked again when the playhead needs it
      console.error(e);
      return;
    }
    got.frames.forEach((/** @type {any} */ m, /** @type {number} */ i) => frames.set(c + i, session.snapshot(m)));
    if (got.frames.length < n) { // the journal ends before the last snapshot's tick: so does the replay
      state.count = c + got.frames.length;
      seek.max = String(state.count - 1);
    }
    renderer.names = new Map(got.players.map((/** @type {[number, string]} */ p) => [p[0], p[1]]));
  };
  const seek = /** @type {HTMLInputElement} */ ($("seek"));
  Object.assign(state, { meta, step, first, last, count, index: 0, tick: first, playing: false, speed: 1, frames });
  seek.max = String(state.count - 1);
  $("controls").classList.remove("hidden");
  $("hud").classList.remove("hidden");
  $("hud-title").textContent = `${meta.game} · replay of ${meta.campaign}`;
  $("hud-state").textContent = "replay";
  const show = (/** @type {number} */ i) => {
    state.index = Math.max(0, Math.min(state.count - 1, i));
    state.tick = first + state.index * step;
    seek.value = String(state.index);
    $("tick").textContent = `tick ${state.tick} / ${last}`;
    $("hud-tick").textContent = String(state.tick);
    if (!frames.has(state.index)) load(state.index);
    if (!frames.has(state.index + 40)) load(state.index + 40); // read ahead
  };
  $("prev").addEventListener("click", () => { state.playing = false; show(state.index - 1); });
  $("next").addEventListener("click", () => { state.playing = false; show(state.index + 1); });
  $("play").addEventListener("click", () => { state.playing = !state.playing; });
  $("speed").addEventListener("change", (ev) => { state.speed = Number(/** @type {HTMLSelectElement} */ (ev.target).value); });
  seek.addEventListener("input", () => { state.playing = false; show(Number(seek.value)); });
  await load(0);
  show(0);
  let lastT = performance.now(), acc = 0;
  const loop = () => {
    const now = performance.now();
    if (state.playing) {
      acc += ((now - lastT) / 1000) * meta.tick_rate * state.speed / step;
      const whole = Math.floor(acc);
      const to = Math.min(state.index + whole, state.count - 1);
      if (whole > 0 && frames.has(to)) { acc -= whole; show(to); }
      if (state.index >= state.count - 1) { state.playing = false; acc = 0; }
    }
    lastT = now;
    $("play").textContent = state.playing ? "⏸" : "▶";
    const snap = frames.get(state.index);
    renderer.resize();
    if (snap) {
      if (snap.tick !== state.drawnTick) { // a new frame: its styles and figures once, not per animation frame
        renderer.styles.update(snap);
        state.drawnTick = snap.tick;
        state.visible = snap.count;
        $("hud-visible").textContent = String(snap.count);
      }
      renderer.draw({ ids: snap.ids, x: snap.fields.x, y: snap.fields.y }, null, renderer.camera());
    }
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}
