// /experiments/{id}: the group's runs (polled every 2 s) with their queue places, buttons to move and
// cancel queued runs, links to the per-sample view and the playground, and the comparison of the runs
// drawn by compare_view.js (loaded on demand: the page works without it); a search's trials and chart
// come from search_view.js.
import {
  $, api, badge, el, emptyRow, fmtDate, fmtNumber, fmtPercent, methodLabel, progressBar, showAlert, TERMINAL,
} from "./common.js";

const POLL_MS = 2000;
const page = $("#experiment-page");
const experimentId = page.dataset.experimentId;
const alertBox = $("#experiment-alert");
let comparedIds = null;
let comparison = null; // renderComparison's handle (destroy() stops its polling)
let searchView = null; // search_view.js, loaded for kind "search"

async function act(path, body, failure) {
  try {
    await api(path, { method: "POST", json: body });
  } catch (err) {
    showAlert(alertBox, `${failure}: ${err.message}`);
  }
  refresh();
}

function moveButton(run, position, text, label) {
  return el("button", { type: "button", class: "btn btn-small", "data-action": `move-${position}`, "aria-label": label,
    title: label, onclick: () => act(`/api/runs/${encodeURIComponent(run.id)}/move`, { position },
      `Could not move run #${run.id}`) }, text);
}

function actions(run) {
  const buttons = [];
  if (run.status === "queued") {
    buttons.push(moveButton(run, "top", "Top", `Start run #${run.id} next`),
      moveButton(run, "up", "↑", `Move run #${run.id} up`),
      moveButton(run, "down", "↓", `Move run #${run.id} down`));
  }
  if (!TERMINAL.has(run.status) && !run.cancel_requested) {
    buttons.push(el("button", { type: "button", class: "btn btn-small btn-ghost-danger", "data-action": "cancel",
      onclick: () => act(`/api/runs/${encodeURIComponent(run.id)}/cancel`, undefined, `Could not cancel run #${run.id}`) },
    "Cancel"));
  }
  if (run.status === "succeeded") {
    buttons.push(el("a", { class: "btn btn-small", href: `/playground?run=${encodeURIComponent(run.id)}` }, "Playground"));
  }
  return el("div", { class: "row-actions" }, buttons);
}

function runRow(run) {
  const href = `/runs/${encodeURIComponent(run.id)}`;
  const ev = (run.summary && run.summary.eval) || {};
  return el("tr", { "data-run-id": run.id, "data-status": run.status },
    el("td", { class: "num" }, el("a", { href }, `#${run.id}`)),
    el("td", { class: "name-cell" }, el("a", { href }, run.name)),
    el("td", { class: "nowrap" }, methodLabel(run.method)),
    el("td", {}, badge(run.status)),
    el("td", { class: "num", "data-queue-position": run.queue_position ?? "" }, run.queue_position ?? "—"),
    el("td", { class: "col-progress" }, el("div", { class: "progress-cell" },
      progressBar(run.progress, `Run ${run.id} progress`), el("span", { class: "muted small" }, fmtPercent(run.progress, 0)))),
    el("td", { class: "num" }, ev.accuracy == null ? "—" : fmtPercent(ev.accuracy, 1)),
    el("td", { class: "num" }, ev.f1 == null ? "—" : fmtNumber(ev.f1, 3)),
    el("td", { class: "num" }, fmtNumber(ev.loss, 4)),
    el("td", { class: "actions" }, actions(run)));
}

// Runs the per-sample view can line up: succeeded classification runs (one experiment = one eval set
// unless a grid varied the seed or the split; the view says so when it does).
function samplesLink(runs) {
  const ids = runs.filter((r) => r.status === "succeeded" && r.task === "classification").map((r) => r.id);
  const link = $("#experiment-samples");
  link.hidden = ids.length === 0;
  link.href = `/samples?runs=${ids.join(",")}`;
}

// The comparison polls by itself while runs are live; it is drawn again only if the set of runs changes.
async function showComparison(runIds) {
  const box = $("#experiment-compare");
  const key = runIds.join(",");
  if (key === comparedIds) return;
  comparedIds = key;
  let view;
  try {
    view = await import("./compare_view.js");
    if (typeof view.renderComparison !== "function") throw new Error("compare_view.js has no renderComparison");
  } catch {
    box.replaceChildren(el("p", { class: "alert alert-info", "data-comparison": "unavailable" },
      "Comparison unavailable: the comparison view could not be loaded. The runs table above still works."));
    return;
  }
  if (comparison) comparison.destroy();
  comparison = null;
  if (!runIds.length) { box.replaceChildren(el("p", { class: "muted" }, "No runs to compare.")); return; }
  try {
    comparison = view.renderComparison(box, runIds);
  } catch (err) {
    box.replaceChildren(el("p", { class: "alert alert-error", "data-comparison": "unavailable" },
      `Comparison unavailable: ${err.message}`));
  }
}

async function refresh() {
  try {
    const x = await api(`/api/experiments/${encodeURIComponent(experimentId)}`);
    $("#experiment-name").textContent = x.name;
    document.title = `${x.name} · peftlab`;
    const keys = Object.keys(x.spec.grid || {});
    const what = x.kind === "grid" ? (keys.length ? `Grid over ${keys.join(", ")}` : "One config")
      : x.kind === "search" ? `Search over ${Object.keys(x.spec.space || {}).join(", ")}` : "Every chosen method on one dataset";
    const seeds = x.spec.repeats > 1 ? ` × ${x.spec.repeats} seeds` : "";
    const budget = x.spec.budget ? ` · budget ${x.spec.budget.amount} ${x.spec.budget.kind} per method` : "";
    $("#experiment-subtitle").textContent = `${what}${seeds}${budget} · ${x.runs.length} runs · created ${fmtDate(x.created_at)}`;
    $("#experiment-runs-body").replaceChildren(...(x.runs.length ? x.runs.map(runRow) : [emptyRow(10, "This experiment has no runs.")]));
    samplesLink(x.runs);
    if (x.search) {
      searchView = searchView || await import("./search_view.js");
      searchView.renderSearch(x.search);
    }
    showComparison(x.runs.map((r) => r.id));
  } catch (err) {
    showAlert(alertBox, `Could not load the experiment: ${err.message}`);
  }
}

$("#experiment-delete").addEventListener("click", async () => {
  if (!window.confirm("Delete this experiment and all its runs, with their metrics and adapters?")) return;
  try {
    await api(`/api/experiments/${encodeURIComponent(experimentId)}`, { method: "DELETE" });
    window.location.assign("/experiments");
  } catch (err) {
    showAlert(alertBox, err.message);
  }
});

refresh();
setInterval(refresh, POLL_MS);
