// /runs/{id}: status, progress with ETA, summary, config and live charts fed by SSE.
import { LiveChart } from "./charts.js";
import { setupTryIt, showMergedLink } from "./try_it.js";
import { setupNotes } from "./run_notes.js";
import { addChartControls } from "./chart_controls.js";
import { showConfusion } from "./confusion.js";
import { setupLogTail } from "./log_tail.js";
import { SYSTEM_METRICS, systemCharts } from "./run_charts.js";
import { drawKeyRefusals } from "./key_refusals.js";
import {
  $, api, badge, el, fmtBytes, fmtCount, fmtDate, fmtDuration, fmtInt, fmtNumber, fmtPercent,
  methodLabel, runDuration, setProgress, showAlert, TERMINAL,
} from "./common.js";

const root = $("#run-page");
const runId = root.dataset.runId;
const base = `/api/runs/${encodeURIComponent(runId)}`;
let run = null;
let status = null;
let progress = 0;
let stream = null;
let logTail = null;
let lastEventId = ""; // the stream's last event: a stream opened again resumes after it
let streamPaused = false; // closed by us while the tab is hidden
let notes = null; // the tags and notes card, set up on the first load

const expFormat = (v) => (v === 0 ? "0" : v.toExponential(1));
const charts = {
  loss: new LiveChart($("#chart-loss"), {
    series: [
      { name: "train/loss", label: "train loss", color: "#2563eb" },
      { name: "eval/loss", label: "eval loss", color: "#ea580c" },
    ],
  }),
  eval: new LiveChart($("#chart-eval"), {
    series: [
      { name: "eval/accuracy", label: "accuracy", color: "#16a34a", scale: "frac" },
      { name: "eval/f1", label: "F1", color: "#9333ea", scale: "frac" },
      { name: "eval/perplexity", label: "perplexity", color: "#dc2626", scale: "ppl" },
    ],
    scales: { frac: { range: [0, 1] }, ppl: { side: "right" } },
  }),
  lr: new LiveChart($("#chart-lr"), {
    series: [{ name: "train/lr", label: "learning rate", color: "#0891b2" }],
    scales: { y: { format: expFormat } },
  }),
};

Object.assign(charts, systemCharts());
// Smoothing and log scale on every chart, remembered per chart.
for (const [key, chart] of Object.entries(charts)) addChartControls(chart.container.closest(".chart-card"), chart, key);

function addMetric(m) {
  for (const chart of Object.values(charts)) {
    if (chart.has(m.name)) chart.add(m.name, Number(m.step), Number(m.value));
  }
}

// ---- header, progress, ETA -----------------------------------------------------------------

function renderStatus() {
  $("#run-status").replaceChildren(badge(status));
  if (status !== "queued") drawKeyRefusals([]);
  const active = !TERMINAL.has(status);
  const cancel = $("#cancel-run");
  cancel.hidden = !active;
  if (run && run.cancel_requested && active) { cancel.disabled = true; cancel.textContent = "Cancelling…"; }
  $("#download-adapter").hidden = status !== "succeeded";
  $("#delete-run").hidden = status === "running";  // a running run is cancelled first
  setProgress($("#run-progress"), status === "succeeded" ? 1 : progress);
  $("#run-progress").classList.toggle("progress-done", status === "succeeded");
  $("#run-progress").classList.toggle("progress-stopped", status === "failed" || status === "cancelled");
  $("#progress-pct").textContent = fmtPercent(status === "succeeded" ? 1 : progress, 0);
  renderEta();
}

// ETA: assume the rest goes at the average pace so far (progress per second since started_at).
function renderEta() {
  const node = $("#progress-eta");
  if (!run) return;
  const elapsed = runDuration(run);
  if (status === "queued") node.textContent = "Waiting for a worker…";
  else if (status === "running") {
    const eta = progress > 0.01 && elapsed ? elapsed * (1 - progress) / progress : null;
    node.textContent = `Elapsed ${fmtDuration(elapsed)}${eta != null ? ` · about ${fmtDuration(eta)} left` : " · estimating time left…"}`;
  } else if (elapsed != null) node.textContent = `${status === "succeeded" ? "Finished" : "Stopped"} after ${fmtDuration(elapsed)}`;
  else node.textContent = status === "cancelled" ? "Cancelled before it started" : "";
}
setInterval(() => { if (status === "running") renderEta(); }, 1000);

// While the run waits: do live workers refuse the server's task messages (another PEFTLAB_SECRET_KEY)? The page
// came with the answer at load; this keeps it current, and drops it once the run leaves the queue.
async function checkKeyRefusals() {
  if (status !== "queued") { drawKeyRefusals([]); return; }
  try {
    drawKeyRefusals(await api("/api/workers"));
  } catch { /* the next check tries again; the page keeps what it shows */ }
}
setInterval(checkKeyRefusals, 15000);

function renderHeader() {
  const cfg = run.config || {};
  const name = run.name || `Run #${run.id}`;
  document.title = `${name} · peftlab`;
  $("#run-name").textContent = name;
  const parts = [methodLabel(run.method || (cfg.method && cfg.method.type)), `on ${run.base_model || cfg.base_model || "?"}`,
    `created ${fmtDate(run.created_at)}`];
  const resumed = (run.summary || {}).resumed_from;
  if (resumed) parts.push(resumedText(resumed));
  else if (run.attempts > 1) parts.push(`attempt ${run.attempts}`);
  // A cancelled run may say why: a search's pruner stopped it ("pruned by the search at step …").
  if (status === "cancelled" && run.error) parts.push(run.error);
  $("#run-subtitle").textContent = parts.join(" · ");
}

function renderFailure() {
  const failed = status === "failed" && (run.error || run.traceback);
  $("#failure").hidden = !failed;
  if (!failed) return;
  $("#failure-message").textContent = run.error || "The run failed without a message.";
  $("#failure-trace-wrap").hidden = !run.traceback;
  $("#failure-trace").textContent = run.traceback || "";
}

// ---- summary and config tables --------------------------------------------------------------

function kv(label, value, extraClass) {
  return el("tr", {}, el("th", { scope: "row" }, label), el("td", { class: extraClass }, value == null || value === "" ? "—" : value));
}

function renderSummary() {
  const s = run.summary || {};
  const ev = s.eval || {};
  const hasAny = Object.entries(s).some(([k, v]) => k !== "eval" && v != null) || Object.values(ev).some((v) => v != null);
  const body = $("#summary-body");
  if (!hasAny) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 2 },
      TERMINAL.has(status) ? "No figures were recorded for this run." : "Figures appear when the run finishes.")));
    return;
  }
  const share = s.trainable_params != null && s.total_params ? ` (${fmtPercent(s.trainable_params / s.total_params, 2)} of total)` : "";
  const rows = [
    kv("Trainable parameters", s.trainable_params == null ? null : `${fmtInt(s.trainable_params)}${share}`),
    kv("Total parameters", s.total_params == null ? null : `${fmtInt(s.total_params)} (${fmtCount(s.total_params)})`),
    kv("Adapter size", s.adapter_bytes == null ? null : fmtBytes(s.adapter_bytes)),
    kv("Peak memory", s.peak_memory_bytes == null ? null : fmtBytes(s.peak_memory_bytes)),
    kv("Samples / s", s.train_samples_per_s == null ? null : fmtNumber(s.train_samples_per_s, 4)),
    kv("Tokens / s", s.train_tokens_per_s == null ? null : fmtNumber(s.train_tokens_per_s, 4)),
  ];
  const evalRows = [["accuracy", "Eval accuracy"], ["f1", "Eval F1"], ["loss", "Eval loss"], ["perplexity", "Eval perplexity"]];
  for (const [key, label] of evalRows) if (ev[key] != null) rows.push(kv(label, fmtNumber(ev[key], 4), "strong"));
  rows.push(...checkpointRows(s));
  // Figures the worker adds beyond the contract still deserve a line.
  const known = new Set(["trainable_params", "total_params", "adapter_bytes", "peak_memory_bytes", "train_samples_per_s", "train_tokens_per_s", "eval",
    "best_step", "stopped_early", "resumed_from", "stopped_by", "budget"]);
  for (const [key, value] of Object.entries(s)) {
    if (known.has(key) || value == null || typeof value === "object") continue;
    const label = key.replaceAll("_", " ");
    rows.push(kv(label.charAt(0).toUpperCase() + label.slice(1), typeof value === "number" ? fmtNumber(value) : String(value)));
  }
  body.replaceChildren(...rows);
}

// ---- checkpoints: resumed attempts, the best step, early stopping ---------------------------

function resumedText(resumed) {
  return `resumed from step ${fmtInt(resumed.step)} (attempt ${resumed.attempt})`;
}

function checkpointRows(s) {
  const metric = ((run.config || {}).training || {}).metric_for_best;
  const rows = [];
  if (s.best_step != null) {
    const which = s.best_step === s.steps ? "the last step" : `not the last (${fmtInt(s.steps)})`;
    rows.push(kv("Best checkpoint", `step ${fmtInt(s.best_step)} by ${metric}: ${which}; downloads and predictions use it`));
  }
  if (s.stopped_early) rows.push(kv("Stopped early", `yes, at step ${fmtInt(s.steps)}: ${metric} stopped improving`));
  if (s.resumed_from) rows.push(kv("Resumed", resumedText(s.resumed_from)));
  if (s.budget) rows.push(kv("Budget", budgetText(s)));
  return rows;
}

// A budgeted run (training.max_tokens / max_seconds) says whether its budget is what ended it.
function budgetText(s) {
  const b = s.budget;
  const parts = [];
  if (b.max_tokens != null) parts.push(`${fmtInt(b.tokens)} of ${fmtInt(b.max_tokens)} training tokens`);
  if (b.max_seconds != null) parts.push(`${fmtNumber(b.seconds, 3)} of ${fmtInt(b.max_seconds)} s of training`);
  const used = parts.join(", ");
  if (s.stopped_by === "max_tokens") return `stopped at step ${fmtInt(s.steps)}: the token budget was spent (${used})`;
  if (s.stopped_by === "max_seconds") return `stopped at step ${fmtInt(s.steps)}: the time budget was spent (${used})`;
  return `not reached: the steps ran out first (${used})`;
}

// With metric_for_best the adapter download is the best step's weights; when the last step's
// differ they get a download of their own.
async function showWeightDownloads() {
  const s = run.summary || {};
  let artifacts = [];
  try { artifacts = await api(`${base}/artifacts`); } catch { return; }
  const hasLast = artifacts.some((a) => a.kind === "adapter_last");
  $("#download-adapter-last").hidden = !hasLast;
  if (hasLast) {
    $("#download-adapter").textContent = `Download adapter (best, step ${fmtInt(s.best_step)})`;
    $("#download-adapter-last").textContent = `Download last weights (step ${fmtInt(s.steps)})`;
  }
}

function describeMethod(m) {
  if (!m) return null;
  const params = Object.entries(m).filter(([k]) => k !== "type").map(([k, v]) => {
    if (k === "target_modules") return `target modules ${v && v.length ? v.join(", ") : "default"}`;
    return `${k.replaceAll("_", " ")} ${Array.isArray(v) ? v.join(", ") : v}`;
  });
  return [methodLabel(m.type), ...params].join(" · ");
}

async function renderConfig() {
  const cfg = run.config || {};
  const t = cfg.training || {};
  const cols = Object.entries(cfg.columns || {}).filter(([, v]) => v).map(([k, v]) => `${k} ← ${v}`).join(", ");
  const datasetId = cfg.dataset_id ?? run.dataset_id;
  const dsLink = datasetId == null ? null : el("a", { href: `/datasets/${encodeURIComponent(datasetId)}`, id: "config-dataset" }, `#${datasetId}`);
  const evalText = cfg.eval_dataset_id != null ? `dataset #${cfg.eval_dataset_id}` : cfg.eval_fraction != null ? `${fmtPercent(cfg.eval_fraction, 0)} held out` : null;
  const rows = [
    kv("Dataset", dsLink), kv("Evaluation", evalText), kv("Base model", run.base_model || cfg.base_model),
    kv("Task", (run.task || cfg.task || "").replace("_", " ")), kv("Columns", cols), kv("Method", describeMethod(cfg.method)),
  ];
  const trainingLabels = [["learning_rate", "Learning rate"], ["epochs", "Epochs"], ["max_steps", "Max steps"], ["batch_size", "Batch size"],
    ["max_length", "Max length"], ["seed", "Seed"], ["eval_every", "Evaluate every"], ["warmup_ratio", "Warmup ratio"],
    ["weight_decay", "Weight decay"], ["gradient_accumulation", "Gradient accumulation"]];
  for (const [key, label] of trainingLabels) if (key in t) rows.push(kv(label, t[key] == null ? "no limit" : String(t[key])));
  $("#config-body").replaceChildren(...rows);
  if (dsLink) {
    try { dsLink.textContent = (await api(`/api/datasets/${encodeURIComponent(datasetId)}`)).name; } catch { /* keep the id */ }
  }
}

// ---- data loading --------------------------------------------------------------------------

async function fetchRun() {
  run = await api(base);
  status = run.status;
  progress = run.progress || 0;
  renderHeader();
  renderStatus();
  renderFailure();
  renderSummary();
  if (notes) notes.update(run);
  else notes = setupNotes(run, (saved) => { run = saved; });
  if (status === "succeeded") {
    setupTryIt(run);
    showMergedLink(run);
    showWeightDownloads();
  }
  if (status === "succeeded" && run.task === "classification") showConfusion(base, run);
}

function openStream() {
  // One stream for the charts, the status and the worker's log lines (?logs=true): see log_tail.js.
  const resume = lastEventId ? `&last_event_id=${encodeURIComponent(lastEventId)}` : "";
  stream = new EventSource(`${base}/events?logs=true${resume}`);
  // On (re)connect the server replays every event after Last-Event-ID, so the stream alone
  // draws the whole curve so far.
  stream.addEventListener("metric", (e) => {
    lastEventId = e.lastEventId || lastEventId;
    const data = JSON.parse(e.data);
    for (const m of Array.isArray(data) ? data : [data]) addMetric(m);
  });
  stream.addEventListener("log", (e) => {
    lastEventId = e.lastEventId || lastEventId;
    logTail.append(JSON.parse(e.data));
  });
  stream.addEventListener("status", (e) => {
    lastEventId = e.lastEventId || lastEventId;
    const data = JSON.parse(e.data);
    const changed = data.status && data.status !== status;
    if (data.progress != null) progress = data.progress;
    if (data.status) status = data.status;
    renderStatus();
    if (TERMINAL.has(status)) {
      // The stream goes on until the worker's last log lines are out (`end`). Points written just before the
      // run ended (its final evaluation) may come after this status: read the finished curves once too, so
      // every chart, Evaluation too, has them.
      loadFinishedCurves().catch(() => {});
      fetchRun().catch((err) => showAlert($("#run-alert"), err.message));
    } else if (changed) {
      fetchRun().catch(() => {}); // picks up started_at for the ETA
    }
  });
  stream.addEventListener("end", () => {
    stream.close();
    logTail.end();
  });
  stream.addEventListener("error", () => {
    // A finished run's stream may simply end: don't let EventSource reconnect forever.
    if (TERMINAL.has(status)) stream.close();
  });
}

// A browser keeps six HTTP/1.1 connections per server for all its tabs: a run page in a background tab lets
// go of its metric stream and, when shown, opens it again after the last event it had.
document.addEventListener("visibilitychange", () => {
  if (!stream || (TERMINAL.has(status) && stream.readyState === EventSource.CLOSED)) return;
  if (document.hidden && stream.readyState !== EventSource.CLOSED) {
    stream.close();
    streamPaused = true;
  } else if (!document.hidden && streamPaused) {
    streamPaused = false;
    openStream();
  }
});

// Finished runs: one downsampled request is cheaper than replaying every event.
async function loadFinishedCurves() {
  const names = ["train/loss", "eval/loss", "eval/accuracy", "eval/f1", "eval/perplexity", "train/lr"];
  names.push(...SYSTEM_METRICS);
  const data = await api(`${base}/metrics?names=${encodeURIComponent(names.join(","))}&max_points=2000`);
  for (const [name, points] of Object.entries(data.series || {})) {
    for (const [step, value] of points) addMetric({ name, step, value });
  }
}

$("#cancel-run").addEventListener("click", async (e) => {
  const button = e.currentTarget;
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    await api(`${base}/cancel`, { method: "POST" });
    await fetchRun();
  } catch (err) {
    showAlert($("#run-alert"), `Could not cancel: ${err.message}`);
    button.disabled = false;
    button.textContent = "Cancel run";
  }
});

// Deleting removes the run with its metrics and artifacts (adapters, predictions) for good.
$("#delete-run").addEventListener("click", async (e) => {
  if (!window.confirm("Delete this run with its metrics and downloads? This cannot be undone.")) return;
  const button = e.currentTarget;
  button.disabled = true;
  try {
    await api(base, { method: "DELETE" });
    window.location.assign("/runs");
  } catch (err) {
    showAlert($("#run-alert"), `Could not delete: ${err.message}`);
    button.disabled = false;
  }
});

async function start() {
  try {
    await fetchRun();
  } catch (err) {
    showAlert($("#run-alert"), err.status === 404 ? "This run does not exist or was deleted." : err.message);
    return;
  }
  renderConfig();
  logTail = setupLogTail(base);
  if (TERMINAL.has(status)) {
    logTail.openOwnStream();
    try {
      await loadFinishedCurves();
      for (const chart of Object.values(charts)) chart.setEmptyText("No points were recorded.");
      return;
    } catch { /* fall back to the stream's replay */ }
  }
  openStream();
}

start();
