// /runs: the runs table, refreshed every 2 s without reloading the page.
import {
  $, api, badge, el, emptyRow, fmtDate, fmtDuration, fmtPercent, methodLabel, progressBar,
  runDuration, showAlert, TERMINAL,
} from "./common.js";

const POLL_MS = 2000;
const statusSelect = $("#filter-status");
const methodSelect = $("#filter-method");
const body = $("#runs-body");
const errorBox = $("#runs-error");
const datasetNames = new Map();
let timer = null;
let inflight = null;

// Filters live in the page URL too, so a filtered view can be bookmarked or shared.
const params = new URLSearchParams(window.location.search);
statusSelect.value = params.get("status") || "";
methodSelect.value = params.get("method") || "";

function filterQuery() {
  const q = new URLSearchParams();
  if (statusSelect.value) q.set("status", statusSelect.value);
  if (methodSelect.value) q.set("method", methodSelect.value);
  return q.toString();
}

for (const select of [statusSelect, methodSelect]) {
  select.addEventListener("change", () => {
    const qs = filterQuery();
    window.history.replaceState(null, "", qs ? `?${qs}` : window.location.pathname);
    refresh();
  });
}

async function ensureDatasetNames(runs) {
  if (runs.every((r) => r.dataset_id == null || datasetNames.has(r.dataset_id))) return;
  try {
    const list = await api("/api/datasets");
    for (const d of (Array.isArray(list) ? list : list.items || [])) datasetNames.set(d.id, d.name);
  } catch { /* names are cosmetic; fall back to ids */ }
}

async function cancelRun(run, button) {
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    await api(`/api/runs/${encodeURIComponent(run.id)}/cancel`, { method: "POST" });
    refresh();
  } catch (err) {
    showAlert(errorBox, `Could not cancel run #${run.id}: ${err.message}`);
    button.disabled = false;
    button.textContent = "Cancel";
  }
}

function runRow(run) {
  const href = `/runs/${encodeURIComponent(run.id)}`;
  const dsName = datasetNames.get(run.dataset_id);
  const method = run.method || (run.config && run.config.method && run.config.method.type);
  const cancellable = !TERMINAL.has(run.status);
  const action = cancellable
    ? el("button", { type: "button", class: "btn btn-small btn-ghost-danger", "data-action": "cancel", onclick: (e) => cancelRun(run, e.currentTarget) },
      run.cancel_requested ? "Cancelling…" : "Cancel")
    : null;
  if (action && run.cancel_requested) action.disabled = true;
  return el("tr", { "data-run-id": run.id, "data-status": run.status },
    el("td", { class: "num" }, el("a", { href }, `#${run.id}`)),
    el("td", { class: "name-cell" }, el("a", { href }, run.name || `Run ${run.id}`)),
    el("td", {}, badge(run.status)),
    el("td", { class: "nowrap" }, methodLabel(method)),
    el("td", {}, el("code", {}, run.base_model || "—")),
    el("td", {}, run.dataset_id == null ? "—"
      : el("a", { href: `/datasets/${encodeURIComponent(run.dataset_id)}` }, dsName || `#${run.dataset_id}`)),
    el("td", { class: "col-progress" }, el("div", { class: "progress-cell" },
      progressBar(run.progress, `Run ${run.id} progress`), el("span", { class: "muted small" }, fmtPercent(run.progress, 0)))),
    el("td", { class: "nowrap" }, fmtDate(run.created_at)),
    el("td", { class: "num nowrap" }, fmtDuration(runDuration(run))),
    el("td", { class: "actions" }, action),
  );
}

async function refresh() {
  clearTimeout(timer);
  if (inflight) inflight.abort();
  inflight = new AbortController();
  const qs = filterQuery();
  try {
    const data = await api(`/api/runs${qs ? `?${qs}` : ""}`, { signal: inflight.signal });
    const runs = Array.isArray(data) ? data : (data.items || []);
    await ensureDatasetNames(runs);
    body.replaceChildren(...(runs.length ? runs.map(runRow)
      : [emptyRow(10, qs ? "No runs match these filters." : "No runs yet. Start one with “New run”.")]));
    if (errorBox.textContent.startsWith("Lost contact")) showAlert(errorBox, "");
    $("#live-indicator").classList.remove("stale");
  } catch (err) {
    if (err.name === "AbortError") return;
    showAlert(errorBox, `Lost contact with the server (${err.message}). Retrying…`);
    $("#live-indicator").classList.add("stale");
  }
  schedule();
}

// Polling pauses while the tab is hidden and resumes at once when it comes back.
function schedule() {
  clearTimeout(timer);
  if (!document.hidden) timer = setTimeout(refresh, POLL_MS);
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

refresh();
