// Live line charts on uPlot (loaded as the global `uPlot` from /vendor/uplot/).
// Points arrive one by one from the event stream; a chart only redraws on a 250 ms tick,
// so a burst of thousands of replayed events costs one draw, not thousands.
// The view (EMA smoothing, log scale; see chart_controls.js) changes only what is drawn.
import { ema } from "./chart_controls.js";
import { fmtNumber } from "./common.js";

const REDRAW_MS = 250;
const HEIGHT = 240;

export class LiveChart {
  // series: [{name: "train/loss", label: "train", color: "#2563eb", scale: "y"}]
  // scales: {y: {label, side, format, size}} — one axis per scale that has data (size: axis width in px).
  constructor(container, { series, scales = { y: {} } }) {
    this.container = container;
    this.defs = series;
    this.scales = scales;
    this.points = new Map(series.map((s) => [s.name, new Map()])); // name → step → value
    this.plot = null;
    this.shown = ""; // names of the series in the current plot, to know when to rebuild
    this.timer = null;
    this.view = { smoothing: 0, log: false };
    new ResizeObserver(() => this.resize()).observe(container);
  }

  // The placeholder shown until the first point arrives.
  setEmptyText(text) {
    const empty = this.container.querySelector(".chart-empty");
    if (empty && !this.plot) empty.textContent = text;
  }

  // {smoothing: 0..0.99 EMA weight, log: bool}; redraws from the raw points.
  setView({ smoothing = 0, log = false }) {
    this.view = { smoothing, log };
    this.container.dataset.smoothing = String(smoothing);
    this.container.dataset.log = String(log);
    this.shown = ""; // series and scales change: rebuild
    this.flush();
  }

  has(name) {
    return this.points.has(name);
  }

  add(name, step, value) {
    const series = this.points.get(name);
    if (!series || !Number.isFinite(step)) return;
    series.set(step, Number.isFinite(value) ? value : null);
    if (!this.timer) this.timer = setTimeout(() => { this.timer = null; this.flush(); }, REDRAW_MS);
  }

  // uPlot wants one shared x array and one y array per series (null where a series has no point).
  data(active) {
    const steps = new Set();
    for (const def of active) for (const step of this.points.get(def.name).keys()) steps.add(step);
    const xs = Array.from(steps).sort((a, b) => a - b);
    return [xs, ...active.map((def) => {
      const pts = this.points.get(def.name);
      return Array.from(xs, (x) => (pts.has(x) ? pts.get(x) : null));
    })];
  }

  flush() {
    const active = this.defs.filter((d) => this.points.get(d.name).size > 0);
    if (!active.length) return;
    const [lines, data] = this.display(active, this.data(active));
    const key = active.map((d) => d.name).join(",");
    if (!this.plot || key !== this.shown) this.build(lines, data, key);
    else this.plot.setData(data);
    let total = 0;
    for (const def of active) total += this.points.get(def.name).size;
    // Observable state for tests and curious users: how much is drawn.
    this.container.dataset.points = String(total);
    this.container.dataset.seriesCount = String(active.length);
    this.container.dataset.lines = String(lines.length);
  }

  // What is drawn, from a copy of the raw data: on a log scale values ≤ 0 have no place (gaps);
  // with smoothing, each series becomes a faint raw line plus its EMA.
  display(active, [xs, ...ys]) {
    const shown = this.view.log ? ys.map((col) => col.map((v) => (v != null && v > 0 ? v : null))) : ys;
    if (!(this.view.smoothing > 0)) return [active, [xs, ...shown]];
    const lines = [];
    const data = [xs];
    active.forEach((def, i) => {
      lines.push({ ...def, label: `${def.label} (raw)`, raw: true });
      data.push(shown[i]);
      lines.push(def);
      data.push(ema(shown[i], this.view.smoothing));
    });
    return [lines, data];
  }

  build(active, data, key) {
    if (this.plot) this.plot.destroy();
    this.container.replaceChildren();
    const usedScales = [...new Set(active.map((d) => d.scale || "y"))];
    const axes = [{ label: "step", values: (u, splits) => splits.map((v) => fmtNumber(v)) }];
    for (const scale of usedScales) {
      const cfg = this.scales[scale] || {};
      axes.push({
        scale,
        label: cfg.label,
        side: cfg.side === "right" ? 1 : 3,
        grid: { show: scale === usedScales[0] },
        size: cfg.size || 64,
        values: (u, splits) => splits.map((v) => (cfg.format || fmtNumber)(v)),
      });
    }
    const scales = { x: { time: false } };
    for (const scale of usedScales) {
      const range = this.scales[scale] && this.scales[scale].range;
      if (this.view.log) scales[scale] = { auto: true, distr: 3 }; // log10; a fixed 0..1 range has no log
      else scales[scale] = range ? { auto: false, range } : { auto: true };
    }
    this.plot = new window.uPlot({
      width: this.width(),
      height: HEIGHT,
      scales,
      axes,
      cursor: { drag: { x: true, y: false } },
      series: [
        { label: "step", value: (u, v) => (v == null ? "—" : fmtNumber(v)) },
        ...active.map((d) => ({
          label: d.label,
          scale: d.scale || "y",
          stroke: d.raw ? `${d.color}55` : d.color, // raw under a smoothed line: faint
          width: d.raw ? 1 : 2,
          spanGaps: true, // eval points sit on a sparser step grid than training points
          value: (u, v) => (v == null ? "—" : (this.scales[d.scale || "y"]?.format || fmtNumber)(v)),
        })),
      ],
    }, data, this.container);
    this.shown = key;
  }

  width() {
    return Math.max(240, this.container.clientWidth || 600);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: HEIGHT });
  }
}
