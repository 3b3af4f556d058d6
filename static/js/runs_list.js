// /runs: the runs table, refreshed every 2 s without reloading the page; filters and sort live in
// the URL (bookmarkable), ticked runs are compared on /compare?runs=….
import {
  $, $$, api, badge, el, emptyRow, fmtDate, fmtDuration, fmtNumber, fmtPercent, methodLabel, parseTime, progressBar,
  runDuration, showAlert, TERMINAL,
} from "./common.js";
import { setupColumns } from "./runs_columns.js";

const POLL_MS = 2000;
const COLUMNS = 12;
const filters = {
  status: $("#filter-status"), method: $("#filter-method"), dataset_id: $("#filter-dataset"),
  base_model: $("#filter-model"), tag: $("#filter-tag"), q: $("#filter-q"),
};
const body = $("#runs-body");
const errorBox = $("#runs-error");
const compareButton = $("#compare-selected");
const selectAll = $("#select-all");
const datasetNames = new Map();
const selected = new Set(); // run ids, kept across refreshes
const knownTags = new Set();
let shownIds = [];
let timer = null;
let inflight = null;

const params = new URLSearchParams(window.location.search);
const sort = { key: params.get("sort") || "id", order: params.get("order") || "desc" };
for (const [name, input] of Object.entries(filters)) input.value = params.get(name) || "";

function query() {
  const q = new URLSearchParams();
  for (const [name, input] of Object.entries(filters)) if (input.value.trim()) q.set(name, input.value.trim());
  if (sort.key !== "id" || sort.order !== "desc") { q.set("sort", sort.key); q.set("order", sort.order); }
  return q.toString();
}

function applyQuery() {
  const qs = query();
  window.history.replaceState(null, "", qs ? `?${qs}` : window.location.pathname);
  refresh();
}

for (const input of Object.values(filters)) {
  input.addEventListener("change", applyQuery);
}
let tagTimer = null;
filters.tag.addEventListener("input", () => { clearTimeout(tagTimer); tagTimer = setTimeout(applyQuery, 300); });
filters.q.addEventListener("input", () => { clearTimeout(tagTimer); tagTimer = setTimeout(applyQuery, 300); });

// ---- chosen extra columns (metrics, config keys), placed after "Best eval" -----------------

const extraColumns = setupColumns(() => { renderExtraHeaders(); refresh(); });
function renderExtraHeaders() {
  for (const th of $$("th[data-extra-column]")) th.remove();
  $("th[data-sort=best]").after(...extraColumns.headers());
}
renderExtraHeaders();

// ---- sorting: click a header; again to reverse ---------------------------------------------

function renderSortHeaders() {
  for (const th of $$("th[data-sort]")) {
    const active = th.dataset.sort === sort.key;
    if (active) th.setAttribute("aria-sort", sort.order === "asc" ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

for (const th of $$("th[data-sort]")) {
  th.tabIndex = 0;
  const toggle = () => {
    if (sort.key === th.dataset.sort) sort.order = sort.order === "asc" ? "desc" : "asc";
    else { sort.key = th.dataset.sort; sort.order = ["name", "method", "status"].includes(sort.key) ? "asc" : "desc"; }
    renderSortHeaders();
    applyQuery();
  };
  th.addEventListener("click", toggle);
  th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
}
renderSortHeaders();

// ---- selection and Compare ------------------------------------------------------------------

function renderSelection() {
  compareButton.disabled = selected.size < 2;
  compareButton.textContent = selected.size ? `Compare ${selected.size}` : "Compare";
  $("#selected-count").textContent = selected.size === 1 ? "Tick one more run to compare." : "";
  selectAll.checked = shownIds.length > 0 && shownIds.every((id) => selected.has(id));
}

compareButton.addEventListener("click", () => {
  window.location.assign(`/compare?runs=${Array.from(selected).sort((a, b) => a - b).join(",")}`);
});

selectAll.addEventListener("change", () => {
  for (const id of shownIds) { if (selectAll.checked) selected.add(id); else selected.delete(id); }
  for (const box of $$("input[data-select]", body)) box.checked = selectAll.checked;
  renderSelection();
});

// ---- filter choices ---------------------------------------------------------------------------

async function loadChoices() {
  try {
    const items = (x) => (Array.isArray(x) ? x : x.items || []);
    const [datasets, models] = (await Promise.all([api("/api/datasets"), api("/api/models")])).map(items);
    for (const d of datasets) datasetNames.set(d.id, d.name);
    fillSelect(filters.dataset_id, datasets.map((d) => [d.id, d.name]));
    fillSelect(filters.base_model, models.map((m) => [m.id, m.name]));
  } catch { /* filters still work by URL; names are cosmetic */ }
}

function fillSelect(select, options) {
  const wanted = params.get(select.name) || select.value;
  select.replaceChildren(el("option", { value: "" }, "All"), ...options.map(([v, label]) => el("option", { value: v }, label)));
  select.value = wanted;
}

function rememberTags(runs) {
  const before = knownTags.size;
  for (const r of runs) for (const t of r.tags || []) knownTags.add(t);
  if (knownTags.size !== before) {
    $("#known-tags").replaceChildren(...Array.from(knownTags).sort().map((t) => el("option", { value: t })));
  }
}

// ---- rows -----------------------------------------------------------------------------------

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

function bestEval(run) {
  const ev = (run.summary || {}).eval || {};
  if (ev.accuracy != null) return `acc ${fmtNumber(ev.accuracy, 3)}`;
  if (ev.f1 != null) return `F1 ${fmtNumber(ev.f1, 3)}`;
  if (ev.perplexity != null) return `ppl ${fmtNumber(ev.perplexity, 4)}`;
  return "—";
}

function runRow(run) {
  const href = `/runs/${encodeURIComponent(run.id)}`;
  const dsName = datasetNames.get(run.dataset_id);
  const cancellable = !TERMINAL.has(run.status);
  const action = cancellable
    ? el("button", { type: "button", class: "btn btn-small btn-ghost-danger", "data-action": "cancel", onclick: (e) => cancelRun(run, e.currentTarget) },
      run.cancel_requested ? "Cancelling…" : "Cancel")
    : null;
  if (action && run.cancel_requested) action.disabled = true;
  const box = el("input", { type: "checkbox", "data-select": run.id, "aria-label": `Select run ${run.id} to compare`, checked: selected.has(run.id),
    onchange: (e) => { if (e.currentTarget.checked) selected.add(run.id); else selected.delete(run.id); renderSelection(); } });
  const tags = (run.tags || []).length ? el("div", { class: "tag-list" }, run.tags.map((t) => el("span", { class: "tag" }, t))) : null;
  return el("tr", { "data-run-id": run.id, "data-status": run.status },
    el("td", { class: "col-select" }, box),
    el("td", { class: "num" }, el("a", { href }, `#${run.id}`)),
    el("td", { class: "name-cell" }, el("a", { href }, run.name || `Run ${run.id}`), tags),
    el("td", {}, badge(run.status), run.queue_position != null
      ? el("span", { class: "muted small queue-place", "data-queue-position": run.queue_position }, ` #${run.queue_position} in queue`) : null),
    el("td", { class: "nowrap" }, methodLabel(run.method)),
    el("td", { title: run.base_model || "" }, el("div", { class: "cell-clip" }, el("code", {}, run.base_model || "—"))),
    el("td", { title: dsName || "" }, el("div", { class: "cell-clip" }, run.dataset_id == null ? "—"
      : el("a", { href: `/datasets/${encodeURIComponent(run.dataset_id)}` }, dsName || `#${run.dataset_id}`))),
    el("td", { class: "col-progress" }, el("div", { class: "progress-cell" },
      progressBar(run.progress, `Run ${run.id} progress`), el("span", { class: "muted small" }, fmtPercent(run.progress, 0)))),
    el("td", { class: "num nowrap" }, bestEval(run)),
    ...extraColumns.cells(run),
    el("td", { class: "nowrap", title: fmtDate(run.created_at) }, shortDate(run.created_at)),
    el("td", { class: "num nowrap" }, fmtDuration(runDuration(run))),
    el("td", { class: "actions" }, action),
  );
}

// "Nov 30, 14:05" (the year only when it is not this one): the full date is the cell's title. Keeps the
// table within a 1280 px screen.
function shortDate(value) {
  const d = parseTime(value);
  if (!d) return "—";
  const options = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  if (d.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
  return d.toLocaleString(undefined, options);
}

async function refresh() {
  clearTimeout(timer);
  if (inflight) inflight.abort();
  inflight = new AbortController();
  const qs = query();
  try {
    const wanted = extraColumns.metricNames();
    const apiQs = [qs, wanted.length ? `metrics=${encodeURIComponent(wanted.join(","))}` : ""].filter(Boolean).join("&");
    const runs = await api(`/api/runs${apiQs ? `?${apiQs}` : ""}`, { signal: inflight.signal });
    extraColumns.learnKeys(runs);
    rememberTags(runs);
    shownIds = runs.map((r) => r.id);
    const filtered = Object.values(filters).some((input) => input.value.trim());
    body.replaceChildren(...(runs.length ? runs.map(runRow)
      : [emptyRow(COLUMNS + extraColumns.count(), filtered ? "No runs match these filters." : "No runs yet. Start one with “New run”.")]));
    renderSelection();
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

loadChoices().then(refresh);
