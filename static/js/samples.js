// /samples?runs=1,2,3: every eval row of classification runs on one eval set, with each run's
// prediction (right ones marked), a filter for rows where the runs disagree or all are wrong, and paging.
// /samples?a=1,2&b=3,4: two groups of seeds (from the compare page), with filters for rows every seed of
// one group gets right and every seed of the other gets wrong.
import { $, $$, api, el, emptyRow, fmtInt, fmtPercent, methodLabel, showAlert } from "./common.js";

const PAGE = 50;
const params = new URLSearchParams(window.location.search);
const runs = params.get("runs") || "";
const groupA = params.get("a") || "";
const groupB = params.get("b") || "";
const grouped = Boolean(groupA && groupB);
const FILTERS = ["all", "disagree", "all_wrong", ...(grouped ? ["a_right_b_wrong", "b_right_a_wrong"] : [])];
let filter = FILTERS.includes(params.get("filter")) ? params.get("filter") : "all";
let offset = Math.max(0, Number(params.get("offset")) || 0);

function sideOf(data, id) {
  if (!data.groups) return "";
  return data.groups.a.includes(id) ? "A " : "B ";
}

function headRow(data) {
  return el("tr", {}, el("th", { class: "num" }, "Row"), el("th", {}, "Text"), el("th", {}, "Label"),
    data.runs.map((r) => el("th", { "data-run-id": r.id, "data-side": sideOf(data, r.id).trim() || null },
      sideOf(data, r.id) ? el("strong", {}, sideOf(data, r.id)) : null,
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
  const q = new URLSearchParams({ ...(runs ? { runs } : {}), ...(grouped ? { a: groupA, b: groupB } : {}), filter, offset, limit: PAGE });
  try {
    const data = await api(`/api/samples?${q}`);
    showAlert($("#samples-alert"), "");
    $("#samples-subtitle").textContent = data.groups
      ? `Group A (${data.groups.a.length} runs) and group B (${data.groups.b.length} runs) on ${data.eval_set}.`
      : `${data.runs.length} runs on ${data.eval_set}.`;
    for (const node of $$("[data-count]")) {
      if (data.counts[node.dataset.count] != null) node.textContent = `(${fmtInt(data.counts[node.dataset.count])})`;
    }
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

for (const label of $$("[data-groups-only]")) label.hidden = !grouped;
for (const radio of $$("input[name=samples-filter]")) {
  radio.checked = radio.value === filter;
  radio.addEventListener("change", () => { filter = radio.value; offset = 0; load(); });
}
$("#samples-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
$("#samples-next").addEventListener("click", () => { offset += PAGE; load(); });
if (!runs && !grouped) showAlert($("#samples-alert"), "Open this page with runs to compare, e.g. /samples?runs=3,4 (the experiment page links here).");
else load();
