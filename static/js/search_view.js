// The search part of /experiments/{id} (kind "search"): the best trial so far, the trials with their states
// (queued / running / pruned / done / failed / cancelled), and a parallel-coordinates chart of each trial's
// parameters against the objective, drawn by ECharts (window.echarts, /vendor/echarts/echarts.min.js).
import { $, el, fmtNumber } from "./common.js";

const STATE_LABELS = {
  queued: "queued", running: "running", pruned: "pruned", done: "done", failed: "failed", cancelled: "cancelled",
};
const STATE_BADGES = { queued: "queued", running: "running", pruned: "pruned", done: "succeeded", failed: "failed", cancelled: "cancelled" };
let chart = null;
let drawnKey = null;

function fmtValue(v) {
  if (v == null) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) < 1e-2 ? v.toExponential(2) : fmtNumber(v, 4));
  return String(v);
}

function shortKey(key) {
  return key.split(".").pop();
}

function stateBadge(state) {
  return el("span", { class: `badge badge-${STATE_BADGES[state] || "queued"}`, "data-state": state }, STATE_LABELS[state] || state);
}

function describe(search) {
  const sampler = search.sampler === "tpe" ? "TPE" : "random sampling";
  const pruner = { median: "median pruner", successive_halving: "successive halving", none: "no pruning" }[search.pruner];
  const goal = search.direction === "maximize" ? "maximise" : "minimise";
  return `${search.n_trials} trials by ${sampler}, ${search.parallelism} at a time, ${pruner}; ${goal} ${search.metric}.`
    + (search.finished ? " Finished." : "");
}

function showBest(search) {
  const box = $("#search-best");
  const best = search.best;
  if (!best) {
    box.replaceChildren(el("p", { class: "muted" }, "No trial has finished yet."));
    return;
  }
  box.replaceChildren(
    el("p", { class: "search-best-title" }, "Best so far: ",
      el("a", { href: `/runs/${encodeURIComponent(best.run_id)}`, "data-best-trial": best.number }, `trial ${best.number}`),
      ` · ${search.metric} `, el("strong", { id: "search-best-value" }, fmtValue(best.value))),
    el("dl", { class: "search-best-params" }, Object.entries(best.params).flatMap(([k, v]) => [
      el("dt", {}, k), el("dd", { "data-param": k }, fmtValue(v))])));
}

function showCounts(search) {
  const order = ["running", "queued", "done", "pruned", "failed", "cancelled"];
  const made = search.trials.length;
  $("#search-counts").replaceChildren(
    el("li", {}, `${made} of ${search.n_trials} trials made`),
    ...order.filter((s) => search.counts[s]).map((s) => el("li", { "data-count": s }, `${search.counts[s]} ${STATE_LABELS[s]}`)));
}

function showTrials(search) {
  const keys = Object.keys(search.space);
  $("#search-trials-head").replaceChildren(el("tr", {},
    el("th", { class: "num" }, "Trial"), el("th", {}, "State"), ...keys.map((k) => el("th", { class: "num", title: k }, shortKey(k))),
    el("th", { class: "num" }, search.metric), el("th", { class: "num" }, "Step"), el("th", {}, "Run"), el("th", {}, "Note")));
  const body = $("#search-trials-body");
  if (!search.trials.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: keys.length + 6 }, "No trials yet.")));
    return;
  }
  const bestNumber = search.best ? search.best.number : null;
  body.replaceChildren(...search.trials.map((t) => el("tr", {
    "data-trial": t.number, "data-state": t.state, class: t.number === bestNumber ? "is-best" : "" },
  el("td", { class: "num" }, String(t.number)),
  el("td", {}, stateBadge(t.state)),
  ...keys.map((k) => el("td", { class: "num" }, fmtValue(t.params[k]))),
  el("td", { class: "num" }, fmtValue(t.value)),
  el("td", { class: "num" }, t.step == null ? "—" : String(t.step)),
  el("td", {}, t.run_id == null ? "—" : el("a", { href: `/runs/${encodeURIComponent(t.run_id)}` }, `#${t.run_id}`)),
  el("td", { class: "small muted" }, t.reason || ""))));
}

// One axis per parameter (log axes for log-spaced ranges, categories for choices) and one for the objective.
function axes(search) {
  const out = Object.entries(search.space).map(([key, d], dim) => {
    const axis = { dim, name: shortKey(key) };
    if (d.type === "choice") return { ...axis, type: "category", data: d.choices.map(String) };
    if (d.type === "log_uniform" || (d.type === "integer" && d.log)) return { ...axis, type: "log", min: d.low, max: d.high };
    return { ...axis, type: "value", min: d.low, max: d.high };
  });
  out.push({ dim: out.length, name: search.metric, type: "value", scale: true });
  return out;
}

function drawChart(search) {
  const box = $("#search-chart");
  if (!window.echarts) {
    box.replaceChildren(el("p", { class: "muted" }, "The chart library did not load; the trials table below has the same numbers."));
    return;
  }
  const keys = Object.keys(search.space);
  const rows = search.trials.filter((t) => t.value != null && (t.state === "done" || t.state === "pruned"));
  const key = JSON.stringify(rows.map((t) => [t.number, t.state, t.value]));
  if (key === drawnKey && chart) return;
  drawnKey = key;
  if (!chart) {
    chart = window.echarts.init(box, null, { renderer: "canvas" });
    window.addEventListener("resize", () => chart && chart.resize());
  }
  const values = rows.map((t) => t.value);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  const line = (t) => [...keys.map((k) => (search.space[k].type === "choice" ? String(t.params[k]) : t.params[k])), t.value];
  chart.setOption({
    animation: false,
    parallelAxis: axes(search),
    parallel: { left: 60, right: 90, top: 40, bottom: 30 },
    visualMap: {
      show: true, type: "continuous", min: lo, max: hi === lo ? lo + 1e-9 : hi, dimension: keys.length, right: 0, top: "middle",
      text: search.direction === "maximize" ? ["better", "worse"] : ["worse", "better"],  // [top (high), bottom]
      inRange: { color: search.direction === "maximize" ? ["#c7d2fe", "#1d4ed8"] : ["#1d4ed8", "#c7d2fe"] },
      calculable: false, itemHeight: 120,
    },
    tooltip: { trigger: "item", formatter: (p) => `trial ${p.data.name}: ${p.data.value.map(fmtValue).join(" · ")}` },
    series: [
      { name: "done", type: "parallel", lineStyle: { width: 2, opacity: 0.85 },
        data: rows.filter((t) => t.state === "done").map((t) => ({ name: t.number, value: line(t) })) },
      { name: "pruned", type: "parallel", lineStyle: { width: 1, opacity: 0.5, type: "dashed" },
        data: rows.filter((t) => t.state === "pruned").map((t) => ({ name: t.number, value: line(t) })) },
    ],
  }, true);
  box.dataset.lines = String(rows.length);
}

export function renderSearch(search) {
  $("#search-about").textContent = describe(search);
  showBest(search);
  showCounts(search);
  showTrials(search);
  drawChart(search);
}
