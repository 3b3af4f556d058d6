// Extra columns of the runs table that each user picks: metric figures (from GET /api/runs?metrics=…)
// and config keys (dotted paths into the run's config, e.g. method.r, training.learning_rate).
// The choice is remembered in localStorage.
import { $, el, fmtNumber } from "./common.js";

const STORE_KEY = "peftlab.runs.columns";
const MAX_METRICS = 8; // the API's limit per request
const MAX_CONFIG = 12;
export const METRIC_CHOICES = ["eval/accuracy", "eval/f1", "eval/loss", "eval/perplexity", "train/loss",
  "train/grad_norm", "train/tokens_per_s", "train/samples_per_s", "system/memory_bytes", "system/gpu_utilization"];
const LOWER_IS_BETTER = /(loss|perplexity)$/;

function load() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(STORE_KEY) || "{}");
    const strings = (xs) => (Array.isArray(xs) ? xs.filter((x) => typeof x === "string" && x) : []);
    return { metrics: strings(saved.metrics).slice(0, MAX_METRICS), config: strings(saved.config).slice(0, MAX_CONFIG) };
  } catch {
    return { metrics: [], config: [] };
  }
}

function lookup(config, path) {
  let v = config;
  for (const part of path.split(".")) {
    if (v == null || typeof v !== "object") return undefined;
    v = v[part];
  }
  return v;
}

function show(v) {
  if (v === undefined || v === null || v === "") return "—";
  if (typeof v === "number") return fmtNumber(v);
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// Dotted paths of a config's leaves: what the config-key box suggests.
function leafPaths(obj, prefix = "", out = new Set()) {
  for (const [k, v] of Object.entries(obj || {})) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) leafPaths(v, path, out);
    else out.add(path);
  }
  return out;
}

export function setupColumns(onChange) {
  const chosen = load();
  const knownKeys = new Set();
  const metricBoxes = $("#columns-metrics");
  const configInput = $("#columns-config-key");
  const configList = $("#columns-config-list");

  function save() {
    try { window.localStorage.setItem(STORE_KEY, JSON.stringify(chosen)); } catch { /* not remembered */ }
    $("#columns-count").textContent = chosen.metrics.length + chosen.config.length ? ` (${chosen.metrics.length + chosen.config.length})` : "";
    renderChosenConfig();
    onChange();
  }

  metricBoxes.replaceChildren(...METRIC_CHOICES.map((name) => el("label", { class: "check" },
    el("input", { type: "checkbox", value: name, "data-metric-column": name, checked: chosen.metrics.includes(name),
      onchange: (e) => {
        if (e.currentTarget.checked) {
          if (chosen.metrics.length >= MAX_METRICS) { e.currentTarget.checked = false; return; }
          chosen.metrics.push(name);
        } else chosen.metrics = chosen.metrics.filter((m) => m !== name);
        save();
      } }), name)));

  function renderChosenConfig() {
    configList.replaceChildren(...chosen.config.map((key) => el("li", { "data-config-column": key },
      el("code", {}, key), " ",
      el("button", { type: "button", class: "btn btn-small", "aria-label": `Remove column ${key}`,
        onclick: () => { chosen.config = chosen.config.filter((k) => k !== key); save(); } }, "Remove"))));
  }

  function addConfigKey() {
    const key = configInput.value.trim();
    configInput.setCustomValidity("");
    if (!key) return;
    if (!/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(key)) {
      configInput.setCustomValidity("A config key is names joined by dots, e.g. method.r");
      configInput.reportValidity();
      return;
    }
    if (!chosen.config.includes(key) && chosen.config.length < MAX_CONFIG) chosen.config.push(key);
    configInput.value = "";
    save();
  }
  $("#columns-config-add").addEventListener("click", addConfigKey);
  configInput.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addConfigKey(); } });
  renderChosenConfig();
  $("#columns-count").textContent = chosen.metrics.length + chosen.config.length ? ` (${chosen.metrics.length + chosen.config.length})` : "";

  return {
    metricNames: () => chosen.metrics.slice(),
    count: () => chosen.metrics.length + chosen.config.length,
    // Header cells, in the order cells() gives.
    headers: () => [
      ...chosen.metrics.map((m) => el("th", { class: "num extra-col", "data-extra-column": m,
        title: LOWER_IS_BETTER.test(m) ? "Lowest value of the run (hover a cell for the last)" : "Highest value of the run (hover a cell for the last)" },
      `${m} (best)`)),
      ...chosen.config.map((k) => el("th", { class: "extra-col", "data-extra-column": k }, k)),
    ],
    cells: (run) => [
      ...chosen.metrics.map((m) => {
        const fig = (run.metrics || {})[m];
        const best = fig ? (LOWER_IS_BETTER.test(m) ? fig.min : fig.max) : null;
        return el("td", { class: "num nowrap", "data-extra-column": m, title: fig ? `last ${fmtNumber(fig.last)}` : null },
          best == null ? "—" : fmtNumber(best, 4));
      }),
      ...chosen.config.map((k) => el("td", { class: "nowrap", "data-extra-column": k }, show(lookup(run.config, k)))),
    ],
    // Offer the config keys of the runs shown as suggestions.
    learnKeys: (runs) => {
      const before = knownKeys.size;
      for (const run of runs) leafPaths(run.config).forEach((k) => knownKeys.add(k));
      if (knownKeys.size !== before) {
        $("#config-keys").replaceChildren(...Array.from(knownKeys).sort().map((k) => el("option", { value: k })));
      }
    },
  };
}
