// Groups of runs that differ only by seed, in the comparison view (compare_view.js): curves as the mean of
// the seeds with a min–max band, a summary of mean ± 95% interval per group, and whether two groups differ
// by more than noise — all from GET /api/compare's `groups` and `differences`.
import { el, fmtCount, fmtNumber, fmtPercent, methodLabel } from "./common.js";

export const EVAL_METRICS = [
  ["eval/accuracy", "Accuracy"], ["eval/f1", "F1"], ["eval/loss", "Eval loss"], ["eval/perplexity", "Perplexity"],
];

// More than one run in some group: the view can draw groups.
export function hasGroups(body) {
  return (body.groups || []).some((g) => g.run_ids.length > 1);
}

// A run's y at x by linear interpolation between its points (null outside them or across a gap).
function interpolator(points) {
  const pts = points.filter(([, y]) => y != null);
  let i = 0;
  return (x) => {
    if (!pts.length || x < pts[0][0] || x > pts[pts.length - 1][0]) return null;
    while (i < pts.length - 1 && pts[i + 1][0] < x) i += 1;
    const [x0, y0] = pts[i];
    if (x0 === x) return y0;
    const next = pts[i + 1];
    if (!next) return null;
    const [x1, y1] = next;
    if (x1 === x) return y1;
    return y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);
  };
}

// uPlot data for groups of curves: one shared x array (every run's x values), then for each group its
// lowest, highest and mean value at each x over the seeds that cover it (x values ascend, so each run's
// interpolator walks forward once).
export function bandData(groups, series, metric) {
  const perGroup = groups.map((g) => g.run_ids.map((id) => (series[id] || {})[metric] || []));
  const seen = new Set();
  for (const runs of perGroup) for (const pts of runs) for (const [x] of pts) seen.add(x);
  const xs = Float64Array.from(seen).sort();
  const columns = [xs];
  for (const runs of perGroup) {
    const at = runs.map(interpolator);
    const lo = new Array(xs.length).fill(null);
    const hi = new Array(xs.length).fill(null);
    const mean = new Array(xs.length).fill(null);
    xs.forEach((x, k) => {
      const ys = at.map((f) => f(x)).filter((y) => y != null);
      if (!ys.length) return;
      lo[k] = Math.min(...ys);
      hi[k] = Math.max(...ys);
      mean[k] = ys.reduce((a, b) => a + b, 0) / ys.length;
    });
    columns.push(lo, hi, mean);
  }
  return columns;
}

// "0.8512 ± 0.0123" (mean ± half the 95% interval); one seed: the value alone.
export function fmtInterval(iv, digits = 4) {
  if (!iv || iv.mean == null) return "—";
  if (iv.ci_low == null) return fmtNumber(iv.mean, digits);
  return `${fmtNumber(iv.mean, digits)} ± ${fmtNumber((iv.ci_high - iv.ci_low) / 2, 2)}`;
}

function intervalCell(iv) {
  const title = iv && iv.ci_low != null
    ? `95% interval ${fmtNumber(iv.ci_low)} – ${fmtNumber(iv.ci_high)}; seeds ${fmtNumber(iv.min)} – ${fmtNumber(iv.max)} (n = ${iv.n})`
    : null;
  return el("td", { class: "num nowrap", title }, fmtInterval(iv));
}

export function groupLabel(group, runColor) {
  const dot = el("span", { class: "run-swatch", "aria-hidden": "true" });
  dot.style.background = runColor(group.run_ids[0]);
  return el("span", { class: "run-label" }, dot, group.label);
}

// One row per group: its seeds, method, trainable parameters, and mean ± 95% interval of each final and
// best eval metric any group has.
export function groupsTable(body, runColor) {
  const runs = new Map(body.runs.map((r) => [r.id, r]));
  const metrics = EVAL_METRICS.filter(([m]) => body.groups.some((g) => g.metrics[m] || g.best_metrics[m]));
  const head = [el("th", {}, "Group"), el("th", { class: "num" }, "Seeds"), el("th", {}, "Method"),
    el("th", { class: "num" }, "Trainable params")];
  for (const [, title] of metrics) head.push(el("th", { class: "num" }, `${title} (final)`), el("th", { class: "num" }, `${title} (best)`));
  return el("table", { class: "table compare-groups" },
    el("thead", {}, el("tr", {}, head)),
    el("tbody", {}, body.groups.map((g) => {
      const first = runs.get(g.run_ids[0]) || {};
      const summary = first.summary || {};
      const params = g.trainable_params == null ? "—"
        : `${fmtCount(g.trainable_params)}${summary.total_params ? ` (${fmtPercent(g.trainable_params / summary.total_params, 2)})` : ""}`;
      return el("tr", { "data-group": g.run_ids.join(",") },
        el("td", {}, groupLabel(g, runColor)), el("td", { class: "num" }, String(g.run_ids.length)),
        el("td", { class: "nowrap" }, methodLabel(first.method)), el("td", { class: "num nowrap" }, params),
        metrics.flatMap(([m]) => [intervalCell(g.metrics[m]), intervalCell(g.best_metrics[m])]));
    })));
}

function pValue(p) {
  return p < 0.001 ? "< 0.001" : fmtNumber(p, 2);
}

// Every two groups of two or more seeds: which is better in the chosen metric, by how much, and whether
// that is more than noise; the chosen pair's finding in words, with the rows that separate them.
export function differencesCard(body, { metric, onMetric, runColor, pair = null, onPair = () => {} }) {
  const groups = body.groups;
  const eligible = groups.map((g, i) => [g, i]).filter(([g]) => (g.metrics[body.metric] || {}).n >= 2);
  const card = el("section", { class: "card compare-differences" }, el("h2", {}, "Is the difference real?"));
  const metrics = EVAL_METRICS.filter(([m]) => groups.some((g) => (g.metrics[m] || {}).n >= 2));
  if (eligible.length < 2 || !metrics.length) {
    card.append(el("p", { class: "muted" }, "Needs two groups with at least two finished seeds each (Seeds per configuration on the Experiments page, or Repeat with seeds on New run)."));
    return card;
  }
  const metricSelect = el("select", { id: "compare-diff-metric", onchange: (e) => onMetric(e.target.value) },
    metrics.map(([m, title]) => el("option", { value: m, selected: m === (metric || body.metric) }, title)));
  const pick = (id, chosen) => el("select", { id }, eligible.map(([g, i]) => el("option", { value: i, selected: i === chosen }, g.label)));
  // The pair last chosen survives a redraw (live runs poll), as long as both groups are still eligible.
  const valid = pair && pair.every((i) => eligible.some(([, k]) => k === i));
  const selectA = pick("compare-diff-a", valid ? pair[0] : eligible[0][1]);
  const selectB = pick("compare-diff-b", valid ? pair[1] : eligible[1][1]);
  const finding = el("div", { class: "compare-finding", "aria-live": "polite" });
  card.append(el("div", { class: "form-grid compare-diff-pick" },
    el("div", { class: "field" }, el("label", { for: "compare-diff-a" }, "Group A"), selectA),
    el("div", { class: "field" }, el("label", { for: "compare-diff-b" }, "Group B"), selectB),
    el("div", { class: "field" }, el("label", { for: "compare-diff-metric" }, "Metric"), metricSelect)), finding);

  const classification = body.runs.every((r) => r.task === "classification");
  function showPair() {
    const a = Number(selectA.value);
    const b = Number(selectB.value);
    onPair([a, b]);
    finding.replaceChildren();
    if (a === b) { finding.append(el("p", { class: "muted" }, "Pick two different groups.")); return; }
    const d = body.differences.find((x) => (x.a === a && x.b === b) || (x.a === b && x.b === a));
    if (!d) { finding.append(el("p", { class: "muted" }, "No difference computed for this pair.")); return; }
    finding.dataset.distinguishable = String(d.distinguishable);
    finding.append(el("p", { class: `compare-sentence ${d.distinguishable ? "is-real" : "is-noise"}` }, d.text));
    if (classification) {
      const ga = groups[a].run_ids.join(",");
      const gb = groups[b].run_ids.join(",");
      finding.append(el("p", { class: "small" },
        el("a", { href: `/samples?a=${ga}&b=${gb}&filter=a_right_b_wrong`, "data-link": "a-right-b-wrong" },
          `Rows every seed of ${groups[a].label} gets right and every seed of ${groups[b].label} gets wrong`),
        " · ",
        el("a", { href: `/samples?a=${ga}&b=${gb}&filter=b_right_a_wrong`, "data-link": "b-right-a-wrong" }, "the reverse")));
    }
  }
  selectA.addEventListener("change", showPair);
  selectB.addEventListener("change", showPair);
  showPair();

  const digits = 4;
  card.append(el("h3", {}, "Every pair"), el("div", { class: "table-wrap" }, el("table", { class: "table compare-pairs" },
    el("thead", {}, el("tr", {}, el("th", {}, "Better"), el("th", {}, "Than"), el("th", { class: "num" }, "By"),
      el("th", { class: "num" }, "95% interval"), el("th", { class: "num" }, "p"), el("th", {}, "Test"), el("th", {}, "Verdict"))),
    el("tbody", {}, body.differences.map((d) => el("tr", { "data-pair": `${d.a},${d.b}` },
      el("td", {}, groupLabel(groups[d.a], runColor)), el("td", {}, groupLabel(groups[d.b], runColor)),
      el("td", { class: "num" }, fmtNumber(d.difference, digits)),
      el("td", { class: "num nowrap" }, `${fmtNumber(d.ci_low, digits)} – ${fmtNumber(d.ci_high, digits)}`),
      el("td", { class: "num" }, pValue(d.p_value)), el("td", {}, d.test === "paired" ? "paired t" : "Welch t"),
      el("td", {}, d.distinguishable ? "real" : "within noise")))))));
  return card;
}
