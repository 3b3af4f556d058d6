// A comparison of runs, embeddable in any page: renderComparison(container, runIds, options).
// Overlaid curves per metric (x by step, epoch or wall time), an efficiency chart (best eval metric
// against trainable parameters, log scale), a summary table and a config diff, all from one
// GET /api/compare. Needs uPlot (global `uPlot`, /vendor/uplot/uPlot.iife.min.js + uPlot.min.css)
// and /static/css/compare.css on the page. While a run is queued or running it polls and redraws.
//
// Runs that differ only by seed form groups (GET /api/compare's `groups`): with any group of two or more,
// the view shows each group's mean curve with a min–max band over its seeds, a summary of mean ± 95%
// interval, error bars on the efficiency chart and whether two groups differ by more than noise
// (compare_groups.js); "Each run" switches the curves back to one line per run.
//
// Observable state (tests, benchmarks): container.dataset.chartsReady = "1" once every chart is
// drawn; each chart element carries data-series-count and data-points (and data-bands: groups drawn
// with a band); the efficiency chart carries data-error-bars.
import {
  api, el, fmtBytes, fmtCount, fmtDuration, fmtInt, fmtNumber, fmtPercent, methodLabel, parseTime, TERMINAL,
} from "./common.js";
import { bandData, differencesCard, groupsTable, hasGroups } from "./compare_groups.js";

export const METRICS = [
  { name: "train/loss", title: "Train loss" },
  { name: "eval/loss", title: "Eval loss" },
  { name: "eval/accuracy", title: "Eval accuracy" },
  { name: "eval/f1", title: "Eval F1" },
  { name: "eval/perplexity", title: "Eval perplexity" },
];
const X_AXES = [["step", "Step"], ["epoch", "Epoch"], ["time", "Wall time"]];
const POLL_MS = 3000;
const HEIGHT = 260;

// A run's colour follows its id (golden-angle hues), so it is the same on every chart, table and page.
export function runColor(id) {
  return `hsl(${Math.round((Number(id) * 137.508) % 360)} 68% 42%)`;
}

// The band under a group's mean curve: its colour, faint.
function bandFill(id) {
  return `hsl(${Math.round((Number(id) * 137.508) % 360)} 68% 42% / 0.16)`;
}

function swatch(id) {
  const dot = el("span", { class: "run-swatch", "aria-hidden": "true" });
  dot.style.background = runColor(id);
  return dot;
}

function runLabel(run) {
  return el("span", { class: "run-label" }, swatch(run.id),
    el("a", { href: `/runs/${encodeURIComponent(run.id)}` }, run.name || `Run ${run.id}`));
}

// uPlot wants one shared x array: the union of every run's x values, nulls where a run has no point.
function aligned(seriesByRun) {
  const xs = new Set();
  for (const pts of seriesByRun) for (const [x] of pts) xs.add(x);
  const xArr = Float64Array.from(xs).sort();
  const index = new Map(Array.from(xArr, (x, i) => [x, i]));
  return [xArr, ...seriesByRun.map((pts) => {
    const ys = new Array(xArr.length).fill(null);
    for (const [x, y] of pts) ys[index.get(x)] = y;
    return ys;
  })];
}

// Hovering reads each run's nearest real point, not the gap another run's x left in its column.
function nearestPoint(u, seriesIdx, hoveredIdx) {
  const ys = u.data[seriesIdx];
  if (hoveredIdx == null || ys[hoveredIdx] != null) return hoveredIdx;
  for (let d = 1; d < ys.length; d++) {
    if (hoveredIdx - d >= 0 && ys[hoveredIdx - d] != null) return hoveredIdx - d;
    if (hoveredIdx + d < ys.length && ys[hoveredIdx + d] != null) return hoveredIdx + d;
  }
  return hoveredIdx;
}

function xFormat(axis) {
  return axis === "time" ? (v) => fmtDuration(v) : (v) => fmtNumber(v);
}

function chartWidth(node) {
  return Math.max(260, node.clientWidth || 560);
}

// What a run's line chart and a group's band chart share: size, zoom, the nearest point, both axes and
// the x series.
function chartOptions(node, axis) {
  const fx = xFormat(axis);
  return {
    width: chartWidth(node),
    height: HEIGHT,
    scales: { x: { time: false } },
    cursor: { drag: { x: true, y: false }, dataIdx: (u, s, i) => nearestPoint(u, s, i) },
    axes: [{ label: X_AXES.find(([k]) => k === axis)[1].toLowerCase(), values: (u, splits) => splits.map(fx) },
      { size: 60, values: (u, splits) => splits.map((v) => fmtNumber(v)) }],
    series: [{ label: axis, value: (u, v) => (v == null ? "—" : fx(v)) }],
  };
}

function lineChart(node, runs, data, axis) {
  const options = chartOptions(node, axis);
  options.series.push(...runs.map((r) => ({ label: r.name || `Run ${r.id}`, stroke: runColor(r.id), width: 1.5,
    spanGaps: true, value: (u, v) => (v == null ? "—" : fmtNumber(v)) })));
  return new window.uPlot(options, data, node);
}

// Groups: per group a lowest and a highest line (not stroked, left out of the legend) with the band
// between them filled, and the mean line over it.
function bandChart(node, groups, data, axis) {
  const options = chartOptions(node, axis);
  const series = options.series;
  const bands = [];
  groups.forEach((g, i) => {
    const id = g.run_ids[0];
    const base = 1 + 3 * i;
    series.push({ label: `${g.label} min`, stroke: "transparent", width: 0, spanGaps: true, points: { show: false } },
      { label: `${g.label} max`, stroke: "transparent", width: 0, spanGaps: true, points: { show: false } },
      { label: g.run_ids.length > 1 ? `${g.label} (mean of ${g.run_ids.length})` : g.label, stroke: runColor(id),
        width: 2, spanGaps: true, value: (u, v) => (v == null ? "—" : fmtNumber(v)) });
    if (g.run_ids.length > 1) bands.push({ series: [base + 1, base], fill: bandFill(id) });
  });
  const plot = new window.uPlot({ ...options, bands }, data, node);
  // The band edges are drawn, not read: the legend lists only the means.
  const rows = plot.root.querySelectorAll(".u-legend .u-series");
  groups.forEach((g, i) => { for (const k of [1, 2]) if (rows[1 + 3 * i + k - 1]) rows[1 + 3 * i + k - 1].hidden = true; });
  return plot;
}

// The efficiency picture: what each run bought with how many trainable parameters.
function headline(runs) {
  const has = (key) => runs.some((r) => ((r.summary || {}).eval || {})[key] != null);
  if (has("accuracy")) return { key: "accuracy", label: "best eval accuracy" };
  if (has("perplexity")) return { key: "perplexity", label: "eval perplexity (lower is better)" };
  if (has("f1")) return { key: "f1", label: "best eval F1" };
  return null;
}

function efficiencyPoints(runs, metric) {
  return runs.map((r) => ({ run: r, x: (r.summary || {}).trainable_params, y: ((r.summary || {}).eval || {})[metric.key] }))
    .filter((p) => p.x > 0 && p.y != null);
}

// Grouped: one point per group at its mean, with the 95% interval as an error bar (groups of one: none).
function groupEfficiencyPoints(groups, metric) {
  return groups.map((g) => {
    const iv = g.metrics[`eval/${metric.key}`] || {};
    return { run: { id: g.run_ids[0], name: g.label }, x: g.trainable_params, y: iv.mean, lo: iv.ci_low, hi: iv.ci_high };
  }).filter((p) => p.x > 0 && p.y != null);
}

function errorBarPlugin(points, node) {
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u;
        const dpr = devicePixelRatio;
        const bars = points.filter((p) => p.lo != null && p.hi != null);
        ctx.save();
        ctx.lineWidth = 1.5 * dpr;
        for (const p of bars) {
          const x = u.valToPos(p.x, "x", true);
          const y0 = u.valToPos(p.lo, "y", true);
          const y1 = u.valToPos(p.hi, "y", true);
          const cap = 5 * dpr;
          ctx.strokeStyle = runColor(p.run.id);
          ctx.beginPath();
          ctx.moveTo(x, y0); ctx.lineTo(x, y1);
          ctx.moveTo(x - cap, y0); ctx.lineTo(x + cap, y0);
          ctx.moveTo(x - cap, y1); ctx.lineTo(x + cap, y1);
          ctx.stroke();
        }
        ctx.restore();
        node.dataset.errorBars = String(bars.length);
      },
    },
  };
}

const MARKER_SIZE = 11; // the efficiency chart's point diameter (CSS px), stroke 2

// Where a run's name goes beside its marker: the first of right, left, above, below whose box hits neither a
// marker nor a label already placed, nor the plot's edge (then the least bad one). Boxes in CSS px.
function placeLabels(points, toXY, measure, plot) {
  const gap = MARKER_SIZE / 2 + 2 + 5; // past the marker's rim and stroke, plus air
  const markers = points.map((p) => { const [x, y] = toXY(p); const r = MARKER_SIZE / 2 + 2; return { x: x - r, y: y - r, w: 2 * r, h: 2 * r }; });
  const hits = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
  const inside = (b) => b.x >= plot.x && b.y >= plot.y && b.x + b.w <= plot.x + plot.w && b.y + b.h <= plot.y + plot.h;
  const placed = [];
  points.forEach((p, i) => {
    const [x, y] = toXY(p);
    const text = p.run.name || `Run ${p.run.id}`;
    const w = measure(text);
    const h = 14;
    const candidates = [{ x: x + gap, y: y - h / 2 }, { x: x - gap - w, y: y - h / 2 },
      { x: x - w / 2, y: y - gap - h }, { x: x - w / 2, y: y + gap }];
    const cost = (b) => markers.filter((m) => hits(b, m)).length * 2 + placed.filter((l) => hits(b, l)).length
      + (inside(b) ? 0 : 1);
    const best = candidates.map((c) => ({ ...c, w, h, text, run: p.run.id, index: i }))
      .reduce((a, b) => (cost(b) < cost(a) ? b : a));
    placed.push(best);
  });
  return { labels: placed, markers };
}

function labelPlugin(points, node) {
  // Run names drawn on the canvas next to their points: canvas text is never parsed as HTML.
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u;
        const dpr = devicePixelRatio;
        ctx.save();
        ctx.font = `${Math.round(12 * dpr)}px system-ui, sans-serif`;
        ctx.textBaseline = "middle";
        ctx.textAlign = "left"; // placeLabels gives each box's left edge (uPlot leaves the axes' alignment set)
        const plot = { x: u.bbox.left / dpr, y: u.bbox.top / dpr, w: u.bbox.width / dpr, h: u.bbox.height / dpr };
        const { labels, markers } = placeLabels(points, (p) => [u.valToPos(p.x, "x", true) / dpr, u.valToPos(p.y, "y", true) / dpr],
          (text) => ctx.measureText(text).width / dpr, plot);
        for (const label of labels) {
          ctx.fillStyle = runColor(label.run);
          ctx.fillText(label.text, label.x * dpr, (label.y + label.h / 2) * dpr);
        }
        ctx.restore();
        // Observable for tests: where the labels and markers are, in canvas CSS px.
        node.dataset.labelBoxes = JSON.stringify(labels.map(({ x, y, w, h, run }) => ({ x, y, w, h, run })));
        node.dataset.markerBoxes = JSON.stringify(markers);
      },
    },
  };
}

function efficiencyChart(node, points, metric) {
  const xs = Array.from(new Set(points.map((p) => p.x))).sort((a, b) => a - b);
  const data = [xs, ...points.map((p) => xs.map((x) => (x === p.x ? p.y : null)))];
  return new window.uPlot({
    width: chartWidth(node),
    height: HEIGHT + 40,
    // Room around the points (a decade each side, a tenth of the spread above and below) for their labels.
    scales: {
      x: { time: false, distr: 3, range: (u, lo, hi) => [10 ** Math.floor(Math.log10(lo) - 0.5), 10 ** Math.ceil(Math.log10(hi) + 0.5)] },
      y: { range: (u, lo, hi) => {
        // Error bars reach past the points: the range holds them too.
        lo = Math.min(lo, ...points.map((p) => p.lo ?? p.y));
        hi = Math.max(hi, ...points.map((p) => p.hi ?? p.y));
        const pad = Math.max((hi - lo) * 0.15, Math.abs(hi) * 0.02, 1e-3);
        return [lo - pad, hi + pad];
      } },
    },
    cursor: { drag: { x: false, y: false }, dataIdx: (u, s, i) => nearestPoint(u, s, i) },
    axes: [{ label: "trainable parameters (log scale)", values: (u, splits) => splits.map((v) => (v == null ? "" : fmtCount(v))) },
      { label: metric.label, size: 60, values: (u, splits) => splits.map((v) => fmtNumber(v)) }],
    series: [{ label: "trainable", value: (u, v) => (v == null ? "—" : fmtInt(v)) },
      ...points.map((p) => ({ label: p.run.name || `Run ${p.run.id}`, stroke: runColor(p.run.id), fill: runColor(p.run.id),
        paths: () => null, points: { show: true, size: MARKER_SIZE, width: 2 }, value: (u, v) => (v == null ? "—" : fmtNumber(v)) }))],
    plugins: [labelPlugin(points, node), errorBarPlugin(points, node)],
  }, data, node);
}

// ---- tables ---------------------------------------------------------------------------------

function wallTime(run) {
  const start = parseTime(run.started_at);
  if (!start) return null;
  return ((parseTime(run.finished_at) || new Date()) - start) / 1000;
}

const SUMMARY_COLUMNS = [
  ["Method", (r) => methodLabel(r.method)],
  ["Trainable params", (r, s) => (s.trainable_params == null ? "—"
    : `${fmtCount(s.trainable_params)}${s.total_params ? ` (${fmtPercent(s.trainable_params / s.total_params, 2)})` : ""}`)],
  ["Accuracy", (r, s) => fmtNumber((s.eval || {}).accuracy, 4)],
  ["F1", (r, s) => fmtNumber((s.eval || {}).f1, 4)],
  ["Eval loss", (r, s) => fmtNumber((s.eval || {}).loss, 4)],
  ["Perplexity", (r, s) => fmtNumber((s.eval || {}).perplexity, 4)],
  ["Adapter size", (r, s) => fmtBytes(s.adapter_bytes)],
  ["Peak memory", (r, s) => fmtBytes(s.peak_memory_bytes)],
  ["Samples/s", (r, s) => fmtNumber(s.train_samples_per_s, 4)],
  ["Tokens/s", (r, s) => fmtNumber(s.train_tokens_per_s, 4)],
  ["Wall time", (r) => fmtDuration(wallTime(r))],
];
const ALWAYS_SHOWN = new Set(["Method", "Trainable params"]);

function summaryTable(runs) {
  // A figure no run has (tokens/s of classification runs, say) gets no column.
  const columns = SUMMARY_COLUMNS.filter(([title, get]) => ALWAYS_SHOWN.has(title) || runs.some((r) => get(r, r.summary || {}) !== "—"));
  return el("table", { class: "table compare-summary" },
    el("thead", {}, el("tr", {}, el("th", {}, "Run"), el("th", {}, "Status"),
      columns.map(([title]) => el("th", { class: title === "Method" ? "" : "num" }, title)))),
    el("tbody", {}, runs.map((r) => el("tr", { "data-run-id": r.id }, el("td", {}, runLabel(r)),
      el("td", {}, el("span", { class: `badge badge-${r.status}` }, r.status)),
      columns.map(([title, get]) => el("td", { class: title === "Method" ? "nowrap" : "num nowrap" }, get(r, r.summary || {})))))));
}

function shown(value) {
  if (value == null) return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function diffTable(runs, diff) {
  if (!diff.length) return el("p", { class: "muted" }, "These runs have the same configuration.");
  return el("table", { class: "table compare-diff" },
    el("thead", {}, el("tr", {}, el("th", {}, "Setting"), runs.map((r) => el("th", {}, runLabel(r))))),
    el("tbody", {}, diff.map((row) => el("tr", { "data-key": row.key }, el("th", { scope: "row" }, el("code", {}, row.key)),
      runs.map((r) => el("td", {}, shown(row.values[String(r.id)])))))));
}

// ---- the view -------------------------------------------------------------------------------

export function renderComparison(container, runIds, { axis = "step", maxPoints = 1000, poll = true } = {}) {
  const ids = Array.from(new Set(runIds.map(Number).filter((n) => Number.isInteger(n) && n > 0)));
  const state = { axis, plots: new Map(), timer: null, abort: null, closed: false, key: "", view: "groups", metric: null, pair: null };
  const error = el("div", { class: "alert alert-error", role: "alert", hidden: true });
  const axisSwitch = el("div", { class: "segmented compare-axis", role: "radiogroup", "aria-label": "x axis" },
    X_AXES.map(([value, label]) => el("label", {}, el("input", {
      type: "radio", name: `compare-x-${Math.random().toString(36).slice(2)}`, value, checked: value === axis,
      onchange: () => { state.axis = value; state.key = ""; load(); },
    }), ` ${label}`)));
  const viewSwitch = el("div", { class: "segmented compare-view-switch", role: "radiogroup", "aria-label": "curves", hidden: true },
    [["groups", "Groups: mean and min–max band"], ["runs", "Each run"]].map(([value, label]) => el("label", {}, el("input", {
      type: "radio", name: `compare-view-${Math.random().toString(36).slice(2)}`, value, checked: value === "groups",
      onchange: () => { state.view = value; state.key = ""; load(); },
    }), ` ${label}`)));
  const charts = el("div", { class: "charts compare-charts" });
  const groupsSection = el("section", { class: "card compare-groups-card", hidden: true },
    el("h2", {}, "Groups"), el("p", { class: "hint" }, "Runs that differ only by seed, as the mean ± its 95% confidence interval (Student's t over the seeds); hover a cell for the interval and the seeds' range."),
    el("div", { class: "table-wrap compare-groups-wrap" }));
  const differences = el("div", { class: "compare-differences-wrap" });
  const efficiency = el("div", { class: "chart compare-efficiency", "data-points": "0" });
  const summary = el("div", { class: "table-wrap" });
  const diff = el("div", { class: "table-wrap" });
  container.replaceChildren(error,
    el("div", { class: "compare-toolbar" }, el("span", { class: "label" }, "x axis"), axisSwitch, viewSwitch,
      el("span", { class: "live-indicator", hidden: true }, el("span", { class: "dot", "aria-hidden": "true" }), "Live")),
    charts,
    groupsSection,
    differences,
    el("section", { class: "card" }, el("h2", {}, "Efficiency"), efficiency),
    el("section", { class: "card" }, el("h2", {}, "Summary"), summary),
    el("section", { class: "card" }, el("h2", {}, "Configuration differences"), diff));
  const live = container.querySelector(".live-indicator");
  const resize = new ResizeObserver(() => {
    for (const [node, plot] of state.plots) plot.setSize({ width: chartWidth(node), height: plot.height });
  });
  resize.observe(container);

  function drawCharts(body) {
    const runs = body.runs;
    const grouped = hasGroups(body) && state.view === "groups";
    const present = METRICS.filter((m) => runs.some((r) => (body.series[r.id] || {})[m.name]?.length));
    // Same runs, metrics, axis and view: new data goes into the existing plots, keeping the user's zoom.
    const key = `${state.axis}|${grouped}|${runs.map((r) => r.id)}|${present.map((m) => m.name)}`;
    if (key !== state.key) {
      for (const plot of state.plots.values()) plot.destroy();
      state.plots.clear();
      charts.replaceChildren(...(present.length ? present.map((m) => el("section", { class: "card chart-card" },
        el("h2", {}, m.title), el("div", { class: "chart compare-chart", "data-metric": m.name })))
        : [el("p", { class: "chart-empty" }, "No metrics recorded yet.")]));
    }
    for (const m of present) {
      const node = charts.querySelector(`[data-metric="${CSS.escape(m.name)}"]`);
      const perRun = runs.map((r) => (body.series[r.id] || {})[m.name] || []);
      if (grouped) {
        const withPoints = body.groups.filter((g) => g.run_ids.some((id) => (body.series[id] || {})[m.name]?.length));
        const data = bandData(withPoints, body.series, m.name);
        // The groups drawn change as runs report their first points: rebuild rather than setData then.
        const shape = withPoints.map((g) => g.run_ids.join("+")).join("|");
        if (state.plots.has(node) && node.dataset.shape === shape) state.plots.get(node).setData(data);
        else {
          if (state.plots.has(node)) state.plots.get(node).destroy();
          node.replaceChildren();
          state.plots.set(node, bandChart(node, withPoints, data, state.axis));
          node.dataset.shape = shape;
        }
        node.dataset.seriesCount = String(withPoints.length);
        node.dataset.bands = String(withPoints.filter((g) => g.run_ids.length > 1).length);
        node.dataset.points = String(data[0].length);
        continue;
      }
      const data = aligned(perRun);
      if (state.plots.has(node)) state.plots.get(node).setData(data);
      else state.plots.set(node, lineChart(node, runs, data, state.axis));
      node.dataset.seriesCount = String(perRun.filter((p) => p.length).length);
      node.dataset.points = String(perRun.reduce((n, p) => n + p.length, 0));
      node.dataset.bands = "0";
    }
    state.key = key;
    const metric = headline(runs);
    const points = metric ? (grouped ? groupEfficiencyPoints(body.groups, metric) : efficiencyPoints(runs, metric)) : [];
    if (state.plots.has(efficiency)) state.plots.get(efficiency).destroy();
    state.plots.delete(efficiency);
    efficiency.replaceChildren();
    if (points.length) state.plots.set(efficiency, efficiencyChart(efficiency, points, metric));
    else efficiency.append(el("p", { class: "chart-empty" }, "Needs finished runs with an eval metric and a parameter count."));
    efficiency.dataset.points = String(points.length);
    if (!points.length) efficiency.dataset.errorBars = "0";
  }

  function drawGroups(body) {
    const show = hasGroups(body);
    viewSwitch.hidden = !show;
    groupsSection.hidden = !show;
    if (!show) { differences.replaceChildren(); return; }
    groupsSection.querySelector(".compare-groups-wrap").replaceChildren(groupsTable(body, runColor));
    differences.replaceChildren(differencesCard(body, {
      metric: state.metric, runColor, onMetric: (m) => { state.metric = m; load(); },
      pair: state.pair, onPair: (p) => { state.pair = p; } }));
  }

  async function load() {
    clearTimeout(state.timer);
    if (state.abort) state.abort.abort();
    state.abort = new AbortController();
    if (!ids.length) {
      error.hidden = false;
      error.textContent = "No runs to compare: pick some on the Runs page.";
      return;
    }
    let body;
    try {
      const metric = state.metric ? `&metric=${encodeURIComponent(state.metric)}` : "";
      body = await api(`/api/compare?runs=${ids.join(",")}&x=${state.axis}&max_points=${maxPoints}${metric}`, { signal: state.abort.signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      error.hidden = false;
      error.textContent = err.status === 404 ? "One or more of these runs do not exist or are not yours to see." : `Could not load the comparison: ${err.message}`;
      if (err.status !== 404 && err.status !== 422) schedule(true);
      return;
    }
    error.hidden = true;
    drawCharts(body);
    drawGroups(body);
    summary.replaceChildren(summaryTable(body.runs));
    diff.replaceChildren(diffTable(body.runs, body.config_diff));
    // uPlot paints in a microtask; the next frame is when every chart is on screen.
    requestAnimationFrame(() => { container.dataset.chartsReady = "1"; });
    schedule(body.runs.some((r) => !TERMINAL.has(r.status)));
  }

  // Live runs: ask again every few seconds (finished series come from the server's cache).
  function schedule(active) {
    live.hidden = !active;
    if (poll && active && !state.closed) state.timer = setTimeout(load, POLL_MS);
  }

  load();
  return {
    refresh: load,
    destroy() {
      state.closed = true;
      clearTimeout(state.timer);
      if (state.abort) state.abort.abort();
      resize.disconnect();
      for (const plot of state.plots.values()) plot.destroy();
      state.plots.clear();
    },
  };
}
