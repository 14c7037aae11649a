// Curves on a canvas: many series overlaid, linear or log y, smoothing, drag to zoom on x,
// double-click to reset, the nearest point's values on hover; and a scatter of points.
(function () {
"use strict";

const PALETTE = ["#2f6fdb", "#d9534f", "#2a8a4a", "#b7791f", "#7a4cc2", "#1b998b", "#c2185b",
  "#5d6d7e", "#8e6c3a", "#00838f", "#ad1457", "#558b2f"];

function colorOf(i) { return PALETTE[i % PALETTE.length]; }

// Exponential moving average with TensorBoard's debiasing, over finite values only.
function smooth(ys, weight) {
  if (!(weight > 0)) return ys;
  const out = new Array(ys.length);
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y === null || !Number.isFinite(y)) { out[i] = y; continue; }
    last = last * weight + (1 - weight) * y;
    n++;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

// About `count` round tick values between lo and hi.
function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const span = hi - lo;
  const step0 = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const norm = step0 / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

function fmt(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return Number(v.toPrecision(5)).toString();
}

class Chart {
  // `element`: where the chart goes. opts: {height, xLabel}.
  constructor(element, opts) {
    this.opts = opts || {};
    this.root = document.createElement("div");
    this.root.className = "chart";
    this.canvas = document.createElement("canvas");
    if (this.opts.height) this.canvas.style.height = this.opts.height + "px";
    this.tip = document.createElement("div");
    this.tip.className = "tooltip";
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    this.root.append(this.canvas, this.tip, this.legend);
    element.append(this.root);
    this.series = [];
    this.logY = false;
    this.weight = 0;
    this.zoom = null;       // [x0, x1] when zoomed
    this.drag = null;
    this.mode = "lines";
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.style.display = "none"; this.drag = null; this.draw(); });
    this.canvas.addEventListener("mousedown", (e) => { this.drag = { x0: this.px(e), x1: this.px(e) }; });
    this.canvas.addEventListener("mouseup", (e) => this.endDrag(e));
    this.canvas.addEventListener("dblclick", () => { this.zoom = null; this.draw(); });
    this.resizer = new ResizeObserver(() => this.draw());
    this.resizer.observe(this.canvas);
  }

  // series: [{label, xs, ys, highlight}], options: {logY, smoothing, xLabel, yLabel, mode}.
  set(series, options) {
    this.series = series;
    this.logY = !!options.logY;
    this.weight = options.smoothing || 0;
    this.xLabel = options.xLabel || "";
    this.yLabel = options.yLabel || "";
    this.mode = options.mode || "lines";
    this.xTime = !!options.xTime;
    this.shown = series.map((s) => ({ ...s, ys: this.mode === "lines" ? smooth(s.ys, this.weight) : s.ys }));
    const points = series.reduce((n, s) => n + s.xs.length, 0);
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
    this.legend.replaceChildren();
    if (this.mode === "lines" && series.length > 1 && series.length <= 24) {
      series.forEach((s, i) => {
        const key = document.createElement("span");
        key.className = "key";
        key.textContent = "━ " + s.label;
        key.style.color = s.color || colorOf(i);
        if (s.highlight) key.style.fontWeight = "700";
        this.legend.append(key, " ");
      });
      this.legend.append(document.createElement("br"));
    }
    this.legend.append(series.length
      ? (this.mode === "lines" ? `${plural(series.length, "curve")}, ${plural(points, "point")}` : plural(points, "point")) + "; drag to zoom, double-click to reset"
      : "nothing to draw");
    this.draw();
  }

  px(e) { const r = this.canvas.getBoundingClientRect(); return e.clientX - r.left; }

  endDrag(e) {
    if (!this.drag || !this.frame) { this.drag = null; return; }
    const a = Math.min(this.drag.x0, this.px(e)), b = Math.max(this.drag.x0, this.px(e));
    this.drag = null;
    if (b - a > 5) this.zoom = [this.frame.invX(a), this.frame.invX(b)];
    this.draw();
  }

  bounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.shown) {
      for (let i = 0; i < s.xs.length; i++) {
        const x = s.xs[i], y = s.ys[i];
        if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) continue;
        if (this.zoom && (x < this.zoom[0] || x > this.zoom[1])) continue;
        if (x < x0) x0 = x; if (x > x1) x1 = x;
        if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
    if (this.zoom) { x0 = this.zoom[0]; x1 = this.zoom[1]; }
    if (!Number.isFinite(x0)) return null;
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (this.logY) { y0 = Math.log10(y0); y1 = Math.log10(y1); }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.05;
    return { x0, x1, y0: y0 - pad, y1: y1 + pad };
  }

  draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (!w || !h) return;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    const g = this.canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "11px system-ui, sans-serif";
    const b = this.shown ? this.bounds() : null;
    if (!b) {
      g.fillStyle = "#6b7485";
      g.fillText("no points", w / 2 - 24, h / 2);
      this.frame = null;
      return;
    }
    const left = 64, right = 12, top = 10, bottom = 34;
    const W = w - left - right, H = h - top - bottom;
    const X = (x) => left + ((x - b.x0) / (b.x1 - b.x0)) * W;
    const Y = (y) => top + H - (((this.logY ? Math.log10(y) : y) - b.y0) / (b.y1 - b.y0)) * H;
    this.frame = { X, Y, invX: (px) => b.x0 + ((px - left) / W) * (b.x1 - b.x0), left, top, W, H };
    // Axes and grid.
    g.strokeStyle = "#dde2ea"; g.fillStyle = "#6b7485"; g.lineWidth = 1;
    const yt = this.logY
      ? ticks(Math.floor(b.y0), Math.ceil(b.y1), Math.max(2, Math.min(8, Math.ceil(b.y1) - Math.floor(b.y0)))).map((e) => Math.pow(10, Math.round(e)))
      : ticks(b.y0, b.y1, 6);
    for (const t of yt) {
      const y = Y(t);
      if (y < top - 1 || y > top + H + 1) continue;
      g.beginPath(); g.moveTo(left, y); g.lineTo(left + W, y); g.stroke();
      g.fillText(fmt(t), 4, y + 4);
    }
    for (const t of ticks(b.x0, b.x1, Math.max(2, Math.floor(W / 90)))) {
      const x = X(t);
      g.beginPath(); g.moveTo(x, top); g.lineTo(x, top + H); g.stroke();
      const text = this.xTime ? fmtDuration(t) : fmt(t);
      g.fillText(text, x - g.measureText(text).width / 2, top + H + 14);
    }
    g.fillText(this.xLabel, left + W - g.measureText(this.xLabel).width, top + H + 28);
    // Series: the highlighted one last, on top.
    g.save();
    g.beginPath(); g.rect(left, top, W, H); g.clip();
    const order = this.shown.map((s, i) => i).sort((a, c) => (this.shown[a].highlight ? 1 : 0) - (this.shown[c].highlight ? 1 : 0));
    for (const i of order) {
      const s = this.shown[i];
      g.strokeStyle = s.color || colorOf(i);
      g.fillStyle = g.strokeStyle;
      g.lineWidth = s.highlight ? 2.5 : 1.2;
      g.globalAlpha = s.highlight || this.shown.length < 12 ? 1 : 0.75;
      if (this.mode === "scatter") {
        for (let k = 0; k < s.xs.length; k++) {
          const y = s.ys[k];
          if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) continue;
          g.beginPath(); g.arc(X(s.xs[k]), Y(y), s.highlight ? 5 : 3, 0, 2 * Math.PI); g.fill();
        }
        continue;
      }
      g.beginPath();
      let open = false;
      for (let k = 0; k < s.xs.length; k++) {
        const y = s.ys[k];
        if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) { open = false; continue; }
        const px = X(s.xs[k]), py = Y(y);
        if (open) g.lineTo(px, py); else { g.moveTo(px, py); open = true; }
      }
      g.stroke();
    }
    g.restore();
    g.globalAlpha = 1;
    if (this.drag) {
      g.fillStyle = "rgba(47, 111, 219, 0.12)";
      g.fillRect(Math.min(this.drag.x0, this.drag.x1), top, Math.abs(this.drag.x1 - this.drag.x0), H);
    }
    if (this.cross) {
      g.strokeStyle = "#1d2430"; g.lineWidth = 1;
      g.beginPath(); g.arc(this.cross[0], this.cross[1], 4, 0, 2 * Math.PI); g.stroke();
    }
  }

  hover(e) {
    if (this.drag) { this.drag.x1 = this.px(e); this.draw(); return; }
    if (!this.frame) return;
    const r = this.canvas.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    let best = null;
    this.shown.forEach((s, i) => {
      for (let k = 0; k < s.xs.length; k++) {
        const y = s.ys[k];
        if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) continue;
        const dx = this.frame.X(s.xs[k]) - mx, dy = this.frame.Y(y) - my;
        const d = dx * dx + dy * dy;
        if (!best || d < best.d) best = { d, i, k };
      }
    });
    if (!best || best.d > 40 * 40) { this.tip.style.display = "none"; this.cross = null; this.draw(); return; }
    const s = this.shown[best.i];
    const raw = this.series[best.i].ys[best.k];
    const xText = this.xTime ? fmtDuration(s.xs[best.k]) : fmt(s.xs[best.k]);
    this.tip.textContent = `${s.label}\n${this.xLabel} ${xText}\n${this.yLabel} ${fmt(raw)}${this.weight > 0 && this.mode === "lines" ? ` (smoothed ${fmt(s.ys[best.k])})` : ""}`;
    this.tip.style.display = "block";
    this.tip.style.left = Math.min(this.frame.X(s.xs[best.k]) + 10, this.canvas.clientWidth - 180) + "px";
    this.tip.style.top = Math.max(this.frame.Y(s.ys[best.k]) - 50, 0) + "px";
    this.cross = [this.frame.X(s.xs[best.k]), this.frame.Y(s.ys[best.k])];
    this.draw();
  }
}

function fmtDuration(seconds) {
  if (!Number.isFinite(seconds)) return "-";
  const s = Math.round(seconds);
  if (Math.abs(s) < 120) return s + "s";
  if (Math.abs(s) < 7200) return (s / 60).toFixed(1) + "m";
  return (s / 3600).toFixed(1) + "h";
}

window.CohortChart = { Chart, colorOf, fmt, fmtDuration, smooth };
})();
