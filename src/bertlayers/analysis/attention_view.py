"""One standalone HTML page to look at attention: bertviz's head view and model view, drawn on
`<canvas>` so that it stays quick at 512 tokens, with everything inline (no network).

The maps travel quantised: for each (layer, head) the weights are scaled to its maximum, rounded
to uint8 (weight = q * scale / 255), zlib-compressed and base64-encoded, and the page decodes
only the (layer, head) maps it draws. The page's hooks, on `<body>`: `data-ready="1"` after the
first draw and `data-first-draw-ms` (`performance.now()` then); `data-view` (head | model),
`data-text`, `data-layer`, `data-heads` (e.g. "0,3"), `data-token` ("from:5", "to:2" or ""),
`data-draws` and `data-lines` (head-view paints and lines in the last), `data-painted` (what the
last paint showed: "text|layer|heads|token", equal to those hooks once it caught up) and
`data-cells-drawn` (model-view cells drawn).
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..outputs import write_text_atomically

FORMAT_VERSION = 1
_WEIGHT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ViewText:
    """One text for the view: `maps: (K, A, T, T)` weights in [0, 1], `items: (T,)` token (or
    word) strings, optional `special: (T,)` and `segments: (T,)` (0 = text A, 1 = text B)."""

    maps: np.ndarray
    items: Sequence[str]
    special: np.ndarray | None = None
    segments: np.ndarray | None = None
    title: str | None = None


def _encode(maps: np.ndarray, compress: bool) -> tuple[list[list[str]], list[list[float]]]:
    """Per (layer, head): base64 of the uint8-quantised map, and its scale (its maximum)."""
    encoded, scales = [], []
    for layer in maps:  # (A, T, T): one layer at a time keeps the temporaries small
        row, row_scales = [], []
        for head in layer:  # (T, T)
            scale = float(head.max()) if head.size else 0.0
            q = np.rint(head * (255.0 / scale)) if scale > 0 else np.zeros(head.shape)
            raw = q.astype(np.uint8).tobytes()
            row.append(base64.b64encode(zlib.compress(raw, 6) if compress else raw).decode())
            row_scales.append(scale)
        encoded.append(row)
        scales.append(row_scales)
    return encoded, scales


def _text_data(
    n: int, text: ViewText, shape: tuple[int, int], max_tokens: int, truncate: bool, compress: bool
) -> dict:
    maps = np.asarray(text.maps)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3] or maps.shape[:2] != shape:
        raise OptionError(
            f"text {n}: maps must have the shape ({shape[0]} layers, {shape[1]} heads, T, T): "
            f"got {maps.shape}"
        )
    length = maps.shape[-1]
    named = {"items": text.items, "special": text.special, "segments": text.segments}
    for name, values in named.items():
        if values is not None and len(values) != length:
            raise OptionError(f"text {n}: {name} has {len(values)} entries for {length} tokens")
    if length > max_tokens and not truncate:
        raise OptionError(
            f"text {n} has {length} tokens, more than max_tokens={max_tokens}: raise max_tokens "
            f"or truncate (truncate=True keeps the first {max_tokens})"
        )
    kept = min(length, max_tokens)
    maps = maps[:, :, :kept, :kept]
    outside = ~np.isfinite(maps) | (maps < 0) | (maps > 1 + _WEIGHT_TOLERANCE)
    if outside.any():
        raise OptionError(
            f"text {n}: maps must hold weights in [0, 1] (got {float(maps[outside].flat[0]):.4g}):"
            " divide norm-weighted maps by their row sums first"
        )
    special = np.zeros(length, bool) if text.special is None else np.asarray(text.special, bool)
    segments = np.zeros(length, int) if text.segments is None else np.asarray(text.segments)
    encoded, scales = _encode(np.minimum(maps, 1), compress)
    items = [str(v) for v in text.items]
    return {
        "title": text.title or " ".join(items[:12])[:80],
        "items": items[:kept],
        "special": [int(v) for v in special[:kept]],
        "segments": [int(v) for v in segments[:kept]],
        "truncated_from": length if kept < length else None,
        "scale": scales,
        "maps": encoded,
    }


def render_view(
    texts: Sequence[ViewText],
    layers: Sequence[int],
    heads: Sequence[int],
    *,
    title: str = "bertlayers: attention",
    max_tokens: int = 512,
    truncate: bool = False,
    level: str = "token",
    compress: bool = True,
) -> str:
    """The HTML page (head view and model view, a selector between texts) as a string.

    A text longer than `max_tokens` is refused unless `truncate` (then its first `max_tokens`
    tokens are kept). `layers` are numbered as the project does (attention of layer k is the
    self-attention inside encoder layer k), `heads` from 0; `level` names the units shown."""
    if not texts:
        raise OptionError("the attention view needs at least one text")
    layers, heads = [int(v) for v in layers], [int(v) for v in heads]
    shape = (len(layers), len(heads))
    data = {
        "format": FORMAT_VERSION,
        "encoding": "zlib" if compress else "raw",
        "level": level,
        "layers": layers,
        "heads": heads,
        "texts": [
            _text_data(n + 1, text, shape, max_tokens, truncate, compress)
            for n, text in enumerate(texts)
        ],
    }
    payload = json.dumps(data, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f'<body data-ready="0" data-view="head">\n<h1>{html.escape(title)}</h1>\n{_BODY}\n'
        f'<script type="application/json" id="attn-data">{payload}</script>\n'
        f"<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def write_view(
    path: str | Path,
    texts: Sequence[ViewText],
    layers: Sequence[int],
    heads: Sequence[int],
    **options,
) -> Path:
    """Write `render_view(texts, layers, heads, **options)` to `path`, atomically."""
    return write_text_atomically(path, render_view(texts, layers, heads, **options))


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; margin: 0.2em 0 0.5em; }
.bar { display: flex; flex-wrap: wrap; gap: 0.4em 1em; align-items: center; margin: 0.4em 0; }
.tab { padding: 0.3em 0.9em; border: 1px solid #999; background: #f4f4f4; cursor: pointer; }
body[data-view="head"] #tab-head, body[data-view="model"] #tab-model {
  background: #2b5797; color: white; }
.hbox { display: inline-flex; align-items: center; gap: 2px; padding: 1px 5px; cursor: pointer;
  border-left: 12px solid var(--c); font-size: 0.85em; user-select: none; }
.note { color: #555; font-size: 0.85em; margin: 0.3em 0; }
#hv-frame { position: relative; width: 640px; border: 1px solid #ddd; }
#hv-canvas { position: absolute; left: 0; top: 0; }
#hv-scroll { position: absolute; inset: 0; overflow-y: auto; }
#hv-cols { display: flex; justify-content: space-between; width: 640px; font-size: 0.8em;
  color: #555; }
#mv-grid td, #mv-grid th { padding: 1px; font-size: 0.75em; font-weight: normal; }
#mv-grid canvas { display: block; border: 1px solid #ccc; cursor: pointer; }
#mv-grid canvas:hover { border-color: #d62728; }
.filter label { font-size: 0.8em; margin-right: 4px; }
"""

_BODY = """
<div class="bar"><label>Text <select id="text-select"></select></label>
<button class="tab" id="tab-head">Head view</button>
<button class="tab" id="tab-model">Model view</button></div>
<p class="note" id="note"></p>
<section id="head-view">
<div class="bar"><label>Layer <select id="layer-select"></select></label>
<span>Heads</span><span id="head-boxes" class="bar"></span>
<button id="heads-all">all</button><button id="heads-none">none</button>
<label>hide weights below <input id="min-weight" type="number" min="0" max="1" step="0.005"
 value="0.01" style="width: 5em"></label></div>
<div id="hv-cols"><span>from (query) ↓</span><span>to (key) ↓</span></div>
<div id="hv-frame"><canvas id="hv-canvas"></canvas>
<div id="hv-scroll"><div id="hv-spacer"></div></div></div>
<p class="note">Hover a token to see only its attention (left: what it attends to; right: what
attends to it); click to keep it, click again to let go. Double-click a head to show it alone.</p>
</section>
<section id="model-view" hidden>
<div class="bar filter">Layers <span id="mv-layers"></span></div>
<div class="bar filter">Heads <span id="mv-heads"></span></div>
<p class="note">Each cell is one (layer, head) map, query rows top to bottom, keys left to right,
darker = more attention (0 to 1, the strongest weight in each block of a downsampled map).
Click a cell to open it in the head view.</p>
<table id="mv-grid"></table>
</section>
"""

_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("attn-data").textContent);
const $ = (id) => document.getElementById(id);
const body = document.body;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a"];
const colour = (a) => a < PALETTE.length ? PALETTE[a] : `hsl(${(a * 137.5) % 360},65%,42%)`;
const ROW = 18, PAD = 12, COL = 200, GAP = 240, WIDTH = 640, XL = 8 + COL, XR = XL + GAP;
const BUCKETS = 64, CELL = 84;
const S = { text: 0, layer: 0, heads: new Set(D.heads.map((_, a) => a)), token: null,
  pinned: false, minWeight: 0.01 };
const cache = new Map();
window.addEventListener("error", (e) => { body.dataset.error = String(e.message); });

function bytesOf(text) {
  const bin = atob(text), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
function mapOf(t, k, a) {  // the (T*T) uint8 map of text t, layer k, head a: decoded once
  const key = `${t}/${k}/${a}`;
  if (!cache.has(key)) {
    const raw = bytesOf(D.texts[t].maps[k][a]);
    cache.set(key, D.encoding === "zlib" ? inflate(raw) : Promise.resolve(raw));
  }
  return cache.get(key);
}
const text = () => D.texts[S.text];
const yOf = (i) => PAD + i * ROW + ROW / 2;

function setHooks() {
  body.dataset.text = String(S.text);
  body.dataset.layer = String(D.layers[S.layer]);
  body.dataset.heads = [...S.heads].sort((x, y) => x - y).map((a) => D.heads[a]).join(",");
  body.dataset.token = S.token ? `${S.token.side}:${S.token.index}` : "";
}

// ------------------------------------------------------------------ head view
const frame = $("hv-frame"), scroller = $("hv-scroll"), canvas = $("hv-canvas");
function layoutHead() {
  const T = text().items.length, total = 2 * PAD + T * ROW;
  const height = Math.min(total, Math.max(320, window.innerHeight - 220));
  frame.style.height = height + "px";
  $("hv-spacer").style.height = total + "px";
  const dpr = window.devicePixelRatio || 1;
  canvas.width = WIDTH * dpr; canvas.height = height * dpr;
  canvas.style.width = WIDTH + "px"; canvas.style.height = height + "px";
}
let generation = 0, pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; drawHead(); });
}
async function drawHead() {
  const g = ++generation, t = S.text, k = S.layer;
  const heads = [...S.heads].sort((x, y) => x - y);
  const maps = await Promise.all(heads.map((a) => mapOf(t, k, a)));
  if (g !== generation) return;
  paintHead(t, k, heads, maps);
  body.dataset.painted = [t, D.layers[k], heads.map((a) => D.heads[a]).join(","),
    S.token ? `${S.token.side}:${S.token.index}` : ""].join("|");
  body.dataset.draws = String(Number(body.dataset.draws || 0) + 1);
  if (body.dataset.ready !== "1") {
    body.dataset.firstDrawMs = performance.now().toFixed(1);
    body.dataset.ready = "1";
  }
}
function paintHead(t, k, heads, maps) {
  const tx = D.texts[t], T = tx.items.length, ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1, H = canvas.height / dpr, top = scroller.scrollTop;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, WIDTH, H);
  ctx.translate(0, -top);
  const first = Math.max(0, Math.floor((top - PAD) / ROW));
  const last = Math.min(T - 1, Math.ceil((top + H - PAD) / ROW));
  for (let i = first; i <= last; i++) {  // segment B shaded, the kept token marked
    if (tx.segments[i]) { ctx.fillStyle = "#eef3fb"; ctx.fillRect(0, PAD + i * ROW, WIDTH, ROW); }
  }
  if (S.token) {
    const x = S.token.side === "from" ? 0 : XR;
    ctx.fillStyle = "#fff2b3";
    ctx.fillRect(x, PAD + S.token.index * ROW, XL, ROW);
  }
  let lines = 0;
  const rows = S.token && S.token.side === "from" ? [S.token.index] : null;
  const column = S.token && S.token.side === "to" ? S.token.index : -1;
  heads.forEach((a, h) => {
    const m = maps[h], scale = tx.scale[k][a] / 255;
    if (!(scale > 0)) return;
    const qmin = Math.max(1, Math.ceil(S.minWeight / scale - 1e-9));
    const paths = new Array(BUCKETS);
    for (const i of rows || Array.from({ length: T }, (_, i) => i)) {
      const yi = yOf(i), base = i * T;
      const j0 = column >= 0 ? column : 0, j1 = column >= 0 ? column + 1 : T;
      for (let j = j0; j < j1; j++) {
        const q = m[base + j];
        if (q < qmin) continue;
        const yj = yOf(j);
        if (Math.max(yi, yj) < top || Math.min(yi, yj) > top + H) continue;
        const b = Math.min(BUCKETS - 1, Math.floor(q * scale * BUCKETS));
        const path = paths[b] || (paths[b] = new Path2D());
        path.moveTo(XL + 4, yi); path.lineTo(XR - 4, yj);
        lines++;
      }
    }
    ctx.strokeStyle = colour(a); ctx.lineWidth = 2;
    paths.forEach((path, b) => { ctx.globalAlpha = (b + 0.5) / BUCKETS; ctx.stroke(path); });
    ctx.globalAlpha = 1;
  });
  ctx.font = "13px system-ui, sans-serif"; ctx.textBaseline = "middle";
  const multi = new Set(tx.segments).size > 1;
  for (let i = first; i <= last; i++) {
    let label = tx.items[i];
    if (label.length > 24) label = label.slice(0, 23) + "…";
    ctx.fillStyle = tx.special[i] ? "#888" : tx.segments[i] ? "#1a5fb4" : "#222";
    ctx.textAlign = "right"; ctx.fillText(label, XL - 4, yOf(i));
    ctx.textAlign = "left"; ctx.fillText(label, XR + 4, yOf(i));
    if (multi && (i === 0 || tx.segments[i] !== tx.segments[i - 1])) {
      ctx.fillStyle = "#1a5fb4"; ctx.textAlign = "left";
      ctx.fillText(tx.segments[i] ? "B" : "A", 2, yOf(i));
    }
  }
  body.dataset.lines = String(lines);
}
function tokenAt(event) {
  const rect = scroller.getBoundingClientRect(), x = event.clientX - rect.left;
  const i = Math.floor((event.clientY - rect.top + scroller.scrollTop - PAD) / ROW);
  if (i < 0 || i >= text().items.length) return null;
  if (x >= XL - COL && x <= XL + 4) return { side: "from", index: i };
  if (x >= XR - 4 && x <= XR + COL) return { side: "to", index: i };
  return null;
}
const same = (p, q) => (p && q && p.side === q.side && p.index === q.index) || (!p && !q);
scroller.addEventListener("mousemove", (e) => {
  if (S.pinned) return;
  const hit = tokenAt(e);
  if (!same(hit, S.token)) { S.token = hit; setHooks(); schedule(); }
});
scroller.addEventListener("mouseleave", () => {
  if (!S.pinned && S.token) { S.token = null; setHooks(); schedule(); }
});
scroller.addEventListener("click", (e) => {
  const hit = tokenAt(e);
  S.pinned = Boolean(hit) && !(S.pinned && same(hit, S.token));
  S.token = S.pinned ? hit : null;
  setHooks(); schedule();
});
scroller.addEventListener("scroll", schedule);

function buildHeadControls() {
  const boxes = $("head-boxes");
  D.heads.forEach((head, a) => {
    const label = document.createElement("label");
    label.className = "hbox"; label.style.setProperty("--c", colour(a));
    const box = document.createElement("input");
    box.type = "checkbox"; box.id = `head-${head}`; box.dataset.head = String(head);
    box.checked = true;
    box.addEventListener("change", () => {
      if (box.checked) S.heads.add(a); else S.heads.delete(a);
      setHooks(); schedule();
    });
    label.addEventListener("dblclick", (e) => { e.preventDefault(); onlyHead(a); });
    label.append(box, String(head));
    boxes.append(label);
  });
  D.layers.forEach((layer, k) => $("layer-select").add(new Option(`layer ${layer}`, String(k))));
  $("layer-select").addEventListener("change", (e) => {
    S.layer = Number(e.target.value); setHooks(); schedule();
  });
  $("heads-all").addEventListener("click", () => setHeads(D.heads.map((_, a) => a)));
  $("heads-none").addEventListener("click", () => setHeads([]));
  $("min-weight").addEventListener("input", (e) => {
    const v = Number(e.target.value);
    if (v >= 0 && v <= 1) { S.minWeight = v; schedule(); }
  });
}
function setHeads(list) {
  S.heads = new Set(list);
  D.heads.forEach((head, a) => { $(`head-${head}`).checked = S.heads.has(a); });
  setHooks(); schedule();
}
function onlyHead(a) { setHeads([a]); }

// ------------------------------------------------------------------ model view
let observer = null, cellsDrawn = 0;
async function drawCell(cell) {
  const t = S.text, k = Number(cell.dataset.k), a = Number(cell.dataset.a);
  const m = await mapOf(t, k, a);
  if (t !== S.text) return;
  const tx = D.texts[t], T = tx.items.length, dpr = window.devicePixelRatio || 1;
  const n = Math.max(1, Math.min(T, Math.round(CELL * dpr))), pooled = new Uint8Array(n * n);
  for (let i = 0; i < T; i++) {
    const row = Math.floor((i * n) / T) * n;
    for (let j = 0; j < T; j++) {
      const p = row + Math.floor((j * n) / T), q = m[i * T + j];
      if (q > pooled[p]) pooled[p] = q;
    }
  }
  const image = new ImageData(n, n), scale = tx.scale[k][a] / 255;
  for (let p = 0; p < n * n; p++) {
    const v = Math.min(1, pooled[p] * scale);
    image.data[4 * p] = 255 - v * 247; image.data[4 * p + 1] = 255 - v * 207;
    image.data[4 * p + 2] = 255 - v * 148; image.data[4 * p + 3] = 255;
  }
  const off = document.createElement("canvas");
  off.width = n; off.height = n; off.getContext("2d").putImageData(image, 0, 0);
  cell.width = CELL * dpr; cell.height = CELL * dpr;
  const ctx = cell.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, cell.width, cell.height);
  const boundary = tx.segments.findIndex((s) => s !== tx.segments[0]);
  if (boundary > 0) {  // where text B starts, on both axes
    const z = (boundary / T) * cell.width;
    ctx.strokeStyle = "rgba(214,39,40,0.6)"; ctx.lineWidth = dpr;
    ctx.beginPath(); ctx.moveTo(z, 0); ctx.lineTo(z, cell.height);
    ctx.moveTo(0, z); ctx.lineTo(cell.width, z); ctx.stroke();
  }
  cell.dataset.drawn = "1";
  body.dataset.cellsDrawn = String(++cellsDrawn);
}
function buildModelView() {
  const grid = $("mv-grid"), head = grid.insertRow();
  head.insertCell().textContent = "";
  D.heads.forEach((h) => {
    const th = document.createElement("th"); th.textContent = `head ${h}`;
    th.dataset.head = String(h); head.append(th);
  });
  observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting && e.target.dataset.drawn !== "1") drawCell(e.target);
    }
  });
  D.layers.forEach((layer, k) => {
    const row = grid.insertRow();
    row.dataset.layer = String(layer);
    const th = document.createElement("th"); th.textContent = `layer ${layer}`; row.append(th);
    D.heads.forEach((h, a) => {
      const td = row.insertCell(); td.dataset.head = String(h);
      const cell = document.createElement("canvas");
      Object.assign(cell.dataset, { k: String(k), a: String(a), layer: String(layer),
        head: String(h), drawn: "0" });
      cell.style.width = CELL + "px"; cell.style.height = CELL + "px";
      cell.title = `layer ${layer}, head ${h}: click to open in the head view`;
      cell.addEventListener("click", () => {
        S.layer = k; $("layer-select").value = String(k); S.token = null; S.pinned = false;
        setHeads([a]); show("head");
      });
      td.append(cell); observer.observe(cell);
    });
  });
  for (const [where, values, attr] of [["mv-layers", D.layers, "layer"],
    ["mv-heads", D.heads, "head"]]) {
    values.forEach((v) => {
      const label = document.createElement("label"), box = document.createElement("input");
      box.type = "checkbox"; box.checked = true; box.id = `mv-${attr}-${v}`;
      box.addEventListener("change", () => {
        const sel = attr === "layer" ? `#mv-grid tr[data-layer="${v}"]`
          : `#mv-grid [data-head="${v}"]`;
        document.querySelectorAll(sel).forEach((el) => { el.hidden = !box.checked; });
      });
      label.append(box, String(v)); $(where).append(label);
    });
  }
}
function redrawCells() {
  document.querySelectorAll("#mv-grid canvas").forEach((cell) => {
    cell.dataset.drawn = "0"; observer.unobserve(cell); observer.observe(cell);
  });
}

// ------------------------------------------------------------------ the page
function show(view) {
  body.dataset.view = view;
  $("head-view").hidden = view !== "head";
  $("model-view").hidden = view !== "model";
  if (view === "head") schedule();
}
function describe() {
  const tx = text(), T = tx.items.length, unit = D.level === "word" ? "units" : "tokens";
  const cut = tx.truncated_from ? ` (the first ${T} of ${tx.truncated_from})` : "";
  $("note").textContent = `Text ${S.text + 1} of ${D.texts.length}: ${T} ${unit}${cut}. ` +
    "Layer k is the self-attention inside encoder layer k; heads count from 0. Line opacity " +
    "is the attention weight." + (new Set(tx.segments).size > 1 ? " Text B is shaded." : "");
}
function selectText(t) {
  S.text = t; S.token = null; S.pinned = false; cache.clear();
  describe(); layoutHead(); setHooks(); schedule();
  if (observer) redrawCells();
}
D.texts.forEach((tx, t) => $("text-select").add(new Option(`${t + 1}. ${tx.title}`, String(t))));
$("text-select").addEventListener("change", (e) => selectText(Number(e.target.value)));
$("tab-head").addEventListener("click", () => show("head"));
$("tab-model").addEventListener("click", () => show("model"));
window.addEventListener("resize", () => { layoutHead(); schedule(); });
buildHeadControls();
buildModelView();
describe(); layoutHead(); setHooks();
if (D.encoding === "zlib" && typeof DecompressionStream === "undefined") {
  $("note").textContent = "This browser cannot decompress the maps (no DecompressionStream): " +
    "open the page in a recent Chrome, Firefox or Safari.";
} else {
  drawHead();
}
"""
