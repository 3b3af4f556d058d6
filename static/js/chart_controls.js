// Per-chart view controls for LiveChart: an EMA smoothing slider and a log-scale toggle, remembered
// per chart in localStorage. Smoothing works on a copy: the chart's raw points never change, and the
// raw line stays drawn faintly under the smoothed one.

const STORE_PREFIX = "peftlab.chart.";

// Exponential moving average like TensorBoard's: s = w·s + (1 − w)·x, divided by (1 − w^n) so the
// first points are not pulled towards 0. Gaps (null) stay gaps and do not advance the average.
// Returns a new array; `values` is left as it is.
export function ema(values, weight) {
  if (!(weight > 0)) return values.slice();
  const out = new Array(values.length);
  let acc = 0;
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v == null || !Number.isFinite(v)) { out[i] = null; continue; }
    acc = weight * acc + (1 - weight) * v;
    n += 1;
    out[i] = acc / (1 - weight ** n);
  }
  return out;
}

function load(key) {
  try {
    const saved = JSON.parse(window.localStorage.getItem(STORE_PREFIX + key) || "{}");
    const smoothing = Number(saved.smoothing);
    return { smoothing: smoothing >= 0 && smoothing < 1 ? smoothing : 0, log: saved.log === true };
  } catch {
    return { smoothing: 0, log: false };
  }
}

function save(key, view) {
  try { window.localStorage.setItem(STORE_PREFIX + key, JSON.stringify(view)); } catch { /* private mode: not remembered */ }
}

function node(tag, attrs = {}, text = "") {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text) n.textContent = text;
  return n;
}

// Adds the controls to a chart card (after its heading) and applies the remembered view.
// key names the chart in localStorage and in the controls' ids (e.g. "loss" → #chart-loss-smoothing).
export function addChartControls(card, chart, key) {
  const view = load(key);
  const bar = node("div", { class: "chart-controls", "data-chart": key });
  const sliderId = `chart-${key}-smoothing`;
  const slider = node("input", { type: "range", id: sliderId, min: "0", max: "0.99", step: "0.01",
    value: String(view.smoothing), "aria-label": "Smoothing (exponential moving average weight)" });
  const shown = node("output", { for: sliderId, class: "chart-smoothing-value" }, view.smoothing.toFixed(2));
  const label = node("label", { for: sliderId, class: "chart-control", title: "Exponential moving average; 0 = raw points only" }, "Smoothing ");
  const logBox = node("input", { type: "checkbox", id: `chart-${key}-log` });
  logBox.checked = view.log;
  const logLabel = node("label", { class: "chart-control check" });
  logLabel.append(logBox, " Log scale");
  bar.append(label, slider, shown, logLabel);
  const heading = card.querySelector("h2");
  if (heading) heading.after(bar); else card.prepend(bar);

  slider.addEventListener("input", () => {
    view.smoothing = Number(slider.value);
    shown.textContent = view.smoothing.toFixed(2);
    chart.setView(view);
    save(key, view);
  });
  logBox.addEventListener("change", () => {
    view.log = logBox.checked;
    chart.setView(view);
    save(key, view);
  });
  chart.setView(view);
}
