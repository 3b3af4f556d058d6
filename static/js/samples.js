// /samples?runs=1,2,3: every eval row of classification runs on one eval set, with each run's
// prediction (right ones marked), a filter for rows where the runs disagree or all are wrong, and paging.
import { $, $$, api, el, emptyRow, fmtInt, fmtPercent, methodLabel, showAlert } from "./common.js";

const PAGE = 50;
const params = new URLSearchParams(window.location.search);
const runs = params.get("runs") || "";
let filter = ["all", "disagree", "all_wrong"].includes(params.get("filter")) ? params.get("filter") : "all";
let offset = Math.max(0, Number(params.get("offset")) || 0);

function headRow(data) {
  return el("tr", {}, el("th", { class: "num" }, "Row"), el("th", {}, "Text"), el("th", {}, "Label"),
    data.runs.map((r) => el("th", { "data-run-id": r.id },
      el("a", { href: `/runs/${encodeURIComponent(r.id)}` }, `#${r.id}`), " ",
      el("span", { class: "muted small" }, `${methodLabel(r.method)} · ${fmtPercent(r.accuracy, 1)}`))));
}

function predictionCell(p) {
  if (!p) return el("td", { class: "muted" }, "—");
  return el("td", { class: p.correct ? "pred-right" : "pred-wrong", "data-correct": String(p.correct),
    title: p.confidence == null ? null : `confidence ${fmtPercent(p.confidence, 1)}` },
  p.prediction, el("span", { class: "visually-hidden" }, p.correct ? " (right)" : " (wrong)"));
}

function sampleRow(row) {
  const text = row.text_pair ? `${row.text ?? ""} ‖ ${row.text_pair}` : row.text ?? "—";
  return el("tr", { "data-row": row.row },
    el("td", { class: "num" }, row.row), el("td", { class: "sample-text" }, text), el("td", {}, row.label),
    row.predictions.map(predictionCell));
}

async function load() {
  const url = new URL(window.location.href);
  url.searchParams.set("filter", filter);
  url.searchParams.set("offset", offset);
  window.history.replaceState(null, "", url);
  const q = new URLSearchParams({ runs, filter, offset, limit: PAGE });
  try {
    const data = await api(`/api/samples?${q}`);
    showAlert($("#samples-alert"), "");
    $("#samples-subtitle").textContent = `${data.runs.length} runs on ${data.eval_set}.`;
    for (const node of $$("[data-count]")) node.textContent = `(${fmtInt(data.counts[node.dataset.count])})`;
    $("#samples-head").replaceChildren(headRow(data));
    const width = 3 + data.runs.length;
    $("#samples-body").replaceChildren(...(data.rows.length ? data.rows.map(sampleRow)
      : [emptyRow(width, filter === "all" ? "No eval rows." : "No rows match this filter.")]));
    $("#samples-range").textContent = data.total
      ? `${fmtInt(offset + 1)}–${fmtInt(offset + data.rows.length)} of ${fmtInt(data.total)}` : "";
    $("#samples-prev").disabled = offset === 0;
    $("#samples-next").disabled = offset + data.rows.length >= data.total;
  } catch (err) {
    showAlert($("#samples-alert"), err.message);
    $("#samples-body").replaceChildren(emptyRow(3, "Nothing to show."));
  }
}

for (const radio of $$("input[name=samples-filter]")) {
  radio.checked = radio.value === filter;
  radio.addEventListener("change", () => { filter = radio.value; offset = 0; load(); });
}
$("#samples-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
$("#samples-next").addEventListener("click", () => { offset += PAGE; load(); });
if (!runs) showAlert($("#samples-alert"), "Open this page with runs to compare, e.g. /samples?runs=3,4 (the experiment page links here).");
else load();
