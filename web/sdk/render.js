// A generic canvas renderer: any game's entities from the replication schema (positions) and the
// welcome's `spec.draw` hints (contract 1). Without hints every entity is a circle, coloured by
// the value of the first small integer field (e.g. a "kind"), and the own entity stands out.

const PALETTE = ["#7aa2f7", "#e0af68", "#9ece6a", "#f7768e", "#bb9af7", "#7dcfff", "#ff9e64", "#c0caf5"];
const PLAYER = { shape: "ship", color: "#ffffff", size: 0, label: "" };

/**
 * @typedef {Object} Style
 * @property {"circle"|"square"|"triangle"|"ship"} shape
 * @property {string} color
 * @property {number} size   world units (0: a fixed 6 px)
 * @property {string} label
 */

/** @param {any} s @param {Style} base @returns {Style} */
function style(s, base) {
  const o = s && typeof s === "object" ? s : {};
  const shape = ["circle", "square", "triangle", "ship"].includes(o.shape) ? o.shape : base.shape;
  const color = typeof o.color === "string" && /^#[0-9a-fA-F]{3,8}$/.test(o.color) ? o.color : base.color;
  const size = typeof o.size === "number" && o.size >= 0 && o.size < 1e6 ? o.size : base.size;
  const label = typeof o.label === "string" ? o.label.slice(0, 32) : base.label;
  return { shape, color, size, label };
}

/** Styles of one welcome: the field that selects them, by value, the default and the player's. */
export class Styles {
  /** @param {import("./session.js").Welcome} welcome */
  constructor(welcome) {
    const draw = welcome.spec && welcome.spec.draw;
    const schemaNames = welcome.schema ? welcome.schema.names : welcome.dtype.fields.map((f) => f.name);
    /** @type {Style} */
    this.default = style(draw && draw.default, { shape: "circle", color: PALETTE[0], size: 0, label: "" });
    this.player = style(draw && draw.player, PLAYER);
    /** @type {Map<number, Style>} */
    this.byValue = new Map();
    /** @type {string | null} */
    this.field = null;
    if (draw && typeof draw.field === "string" && schemaNames.includes(draw.field)) {
      this.field = draw.field;
      for (const [k, v] of Object.entries(draw.styles || {})) this.byValue.set(Number(k), style(v, this.default));
    } else if (!draw) {
      // No hints: colour by the first integer field besides the id, one palette entry per value.
      const intField = welcome.schema
        ? welcome.schema.fields.find((f) => f.kind === "int")
        : welcome.dtype.fields.find((f) => f.name !== "id" && /[iu]/.test(f.format[1]));
      if (intField) {
        this.field = intField.name;
        for (let v = 0; v < PALETTE.length; v++) this.byValue.set(v, { ...this.default, color: PALETTE[v] });
      }
    }
    /** @type {Map<number, Style>} style of each entity id, from the newest snapshot */
    this.ofId = new Map();
  }

  /** Remember each entity's style from a snapshot's selecting field.
   * @param {import("./session.js").Snapshot} snap */
  update(snap) {
    this.ofId.clear();
    const col = this.field ? snap.fields[this.field] : null;
    if (!col) return;
    for (let i = 0; i < snap.count; i++) {
      const s = this.byValue.get(Number(col[i]));
      if (s) this.ofId.set(snap.ids[i], s);
    }
  }

  /** @param {number} id */
  of(id) { return this.ofId.get(id) || this.default; }
}

/**
 * @typedef {Object} View   what to draw: entity ids and positions (e.g. an Interpolator sample)
 * @property {ArrayLike<number>} ids
 * @property {ArrayLike<number>} x
 * @property {ArrayLike<number>} y
 */

export class Renderer {
  /** @param {HTMLCanvasElement} canvas @param {import("./session.js").Welcome} welcome */
  constructor(canvas, welcome) {
    this.canvas = canvas;
    this.ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d", { alpha: false }));
    this.welcome = welcome;
    this.styles = new Styles(welcome);
    const w = welcome.world;
    this.bounds = welcome.schema && welcome.schema.bounds[2] > welcome.schema.bounds[0]
      ? welcome.schema.bounds : [0, 0, Number(w.width) || 1000, Number(w.height) || 1000];
    /** @type {Map<number, string>} names to write beside entities (e.g. players, for spectators) */
    this.names = new Map();
    this.frames = 0;
  }

  /** Fit the canvas to its CSS size (device pixels). */
  resize() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  }

  /**
   * A camera: centred on (cx, cy) showing `radius` world units around it (the view radius), or
   * the whole world when cx is undefined.
   * @param {number} [cx] @param {number} [cy] @param {number} [radius]
   */
  camera(cx, cy, radius) {
    const [x0, y0, x1, y1] = this.bounds;
    const W = this.canvas.width, H = this.canvas.height;
    if (cx === undefined || cy === undefined || !radius) {
      const scale = Math.min(W / (x1 - x0), H / (y1 - y0)) * 0.96;
      return { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, scale };
    }
    return { cx, cy, scale: Math.min(W, H) / (2.2 * radius) };
  }

  /**
   * Draw one frame.
   * @param {View} view  the entities (the own one excluded when `own` is given)
   * @param {{id: number, x: number, y: number} | null} own
   * @param {{cx: number, cy: number, scale: number}} cam
   */
  draw(view, own, cam) {
    const ctx = this.ctx, W = this.canvas.width, H = this.canvas.height;
    const { cx, cy, scale } = cam;
    const ox = W / 2 - cx * scale, oy = H / 2 - cy * scale;
    ctx.fillStyle = "#0b0e1a";
    ctx.fillRect(0, 0, W, H);
    const [x0, y0, x1, y1] = this.bounds;
    this.grid(ctx, cam, ox, oy);
    ctx.strokeStyle = "#3b4261";
    ctx.lineWidth = 2;
    ctx.strokeRect(x0 * scale + ox, y0 * scale + oy, (x1 - x0) * scale, (y1 - y0) * scale);
    // One path per style: a few fills per frame, whatever the entity count.
    /** @type {Map<Style, number[]>} */
    const groups = new Map();
    const n = view.ids.length;
    const ownId = own ? own.id : -1;
    for (let i = 0; i < n; i++) {
      if (view.ids[i] === ownId) continue;
      const s = this.styles.of(view.ids[i]);
      let g = groups.get(s);
      if (!g) groups.set(s, (g = []));
      g.push(i);
    }
    for (const [s, idx] of groups) {
      ctx.fillStyle = s.color;
      ctx.beginPath();
      const r = Math.max(3, (s.size || 6 / scale) * scale);
      for (const i of idx) shape(ctx, s.shape, view.x[i] * scale + ox, view.y[i] * scale + oy, r);
      ctx.fill();
    }
    ctx.font = `${Math.round(11 * (window.devicePixelRatio || 1))}px sans-serif`;
    ctx.fillStyle = "#c0caf5";
    for (let i = 0; i < n; i++) {
      const name = this.names.get(view.ids[i]) || this.styles.of(view.ids[i]).label;
      if (name) ctx.fillText(name, view.x[i] * scale + ox + 8, view.y[i] * scale + oy - 8);
    }
    if (own) {
      const s = this.styles.player;
      const r = Math.max(5, (s.size || 8 / scale) * scale);
      const px = own.x * scale + ox, py = own.y * scale + oy;
      ctx.fillStyle = s.color;
      ctx.beginPath();
      shape(ctx, s.shape, px, py, r);
      ctx.fill();
      ctx.strokeStyle = "#f7768e";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(px, py, r + 4, 0, 2 * Math.PI);
      ctx.stroke();
    }
    this.frames++;
  }

  /** @param {CanvasRenderingContext2D} ctx @param {{cx: number, cy: number, scale: number}} cam @param {number} ox @param {number} oy */
  grid(ctx, cam, ox, oy) {
    const W = this.canvas.width, H = this.canvas.height;
    let step = 10 ** Math.ceil(Math.log10(80 / cam.scale));
    if (!Number.isFinite(step) || step <= 0) return;
    ctx.strokeStyle = "#161b2e";
    ctx.lineWidth = 1;
    ctx.beginPath();
    const wx0 = -ox / cam.scale, wy0 = -oy / cam.scale;
    for (let x = Math.floor(wx0 / step) * step; x * cam.scale + ox < W; x += step) {
      ctx.moveTo(x * cam.scale + ox, 0); ctx.lineTo(x * cam.scale + ox, H);
    }
    for (let y = Math.floor(wy0 / step) * step; y * cam.scale + oy < H; y += step) {
      ctx.moveTo(0, y * cam.scale + oy); ctx.lineTo(W, y * cam.scale + oy);
    }
    ctx.stroke();
  }
}

/** @param {CanvasRenderingContext2D} ctx @param {string} kind @param {number} x @param {number} y @param {number} r */
function shape(ctx, kind, x, y, r) {
  switch (kind) {
    case "square": ctx.rect(x - r, y - r, 2 * r, 2 * r); break;
    case "triangle": ctx.moveTo(x, y - r); ctx.lineTo(x + r, y + r); ctx.lineTo(x - r, y + r); ctx.closePath(); break;
    case "ship": ctx.moveTo(x, y - r * 1.3); ctx.lineTo(x + r, y + r); ctx.lineTo(x, y + r * 0.4); ctx.lineTo(x - r, y + r); ctx.closePath(); break;
    default: ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI);
  }
}
