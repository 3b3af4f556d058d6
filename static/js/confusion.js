// Confusion matrix (rows: true label, columns: predicted) as a table whose cells are shaded by the
// share of their row, and per-class precision / recall / F1 / support, from GET /api/runs/{id}/confusion.
import { $, api, el, fmtInt, fmtNumber } from "./common.js";

let shownFor = null;

const score = (v) => (v == null ? "—" : fmtNumber(v, 3));

function heatCell(count, rowTotal, diagonal) {
  const share = rowTotal ? count / rowTotal : 0;
  // Blue for right answers (the diagonal), red for confusions; the share of the row sets the depth.
  const rgb = diagonal ? "37, 99, 235" : "220, 38, 38";
  const cell = el("td", {
    class: `num confusion-cell${diagonal ? " confusion-diagonal" : ""}${share > 0.55 ? " confusion-dark" : ""}`,
    title: `${fmtInt(count)} of ${fmtInt(rowTotal)} (${fmtNumber(share * 100, 3)}%)`,
    "data-count": count,
  }, fmtInt(count));
  cell.style.backgroundColor = `rgba(${rgb}, ${(share * 0.85).toFixed(3)})`; // CSSOM: allowed by the CSP
  return cell;
}

function renderMatrix({ labels, matrix }) {
  const head = el("tr", {}, el("th", { scope: "col", class: "confusion-corner" }, "true ↓ / predicted →"),
    ...labels.map((l) => el("th", { scope: "col", class: "num" }, l)));
  const rows = matrix.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    return el("tr", {}, el("th", { scope: "row" }, labels[i]), ...row.map((n, j) => heatCell(n, total, i === j)));
  });
  return el("table", { class: "table confusion-matrix", id: "confusion-matrix" }, el("thead", {}, head), el("tbody", {}, rows));
}

function renderScores(perClass) {
  const head = el("tr", {}, ...["Class", "Precision", "Recall", "F1", "Support"].map((t, i) =>
    el("th", { scope: "col", class: i ? "num" : "" }, t)));
  const rows = perClass.map((c) => el("tr", { "data-label": c.label },
    el("th", { scope: "row" }, c.label), el("td", { class: "num" }, score(c.precision)),
    el("td", { class: "num" }, score(c.recall)), el("td", { class: "num" }, score(c.f1)),
    el("td", { class: "num" }, fmtInt(c.support))));
  return el("table", { class: "table", id: "class-scores" }, el("thead", {}, head), el("tbody", {}, rows));
}

// Once per run: a finished classification run's final evaluation doesn't change.
export async function showConfusion(base, run) {
  if (shownFor === run.id) return;
  shownFor = run.id;
  const card = $("#confusion-card");
  try {
    const data = await api(`${base}/confusion`);
    $("#confusion-summary").textContent = `${fmtInt(data.total)} eval rows · accuracy ${score(data.accuracy)}. `
      + "Cells are shaded by the share of their row (the true class).";
    $("#confusion-body").replaceChildren(el("div", { class: "table-wrap" }, renderMatrix(data)),
      el("div", { class: "table-wrap" }, renderScores(data.per_class)));
  } catch (err) {
    // No stored predictions (e.g. no eval rows) or too many classes: say why instead of a blank card.
    $("#confusion-summary").textContent = err.message;
  }
  card.hidden = false;
}
