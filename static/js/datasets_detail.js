// /datasets/{id}: facts, columns (and naming them), a column's value distribution, paged rows, delete.
import { $, api, el, emptyRow, fmtBytes, fmtDate, fmtInt, showAlert } from "./common.js";

const PAGE = 20;
const root = $("#dataset-page");
const id = root.dataset.datasetId;
let dataset = null;
let offset = 0;

// Cells hold anything JSON can: show objects as JSON, keep strings verbatim (as text, never HTML).
function cellText(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function renderRows(rows) {
  const cols = dataset.columns.map((c) => c.name);
  $("#rows-head").replaceChildren(el("tr", {}, el("th", { class: "num rownum" }, "#"), cols.map((c) => el("th", {}, c))));
  const body = $("#rows-body");
  if (!rows.length) {
    body.replaceChildren(emptyRow(cols.length + 1, "No rows."));
    return;
  }
  body.replaceChildren(...rows.map((row, i) => el("tr", {},
    el("td", { class: "num rownum" }, fmtInt(offset + i + 1)),
    cols.map((c) => {
      const text = cellText(row[c]);
      return text === null
        ? el("td", { class: "null" }, "null")
        : el("td", { title: text.length > 80 ? text : null }, text);
    }),
  )));
}

function renderPager(shown) {
  const total = dataset.num_rows;
  $("#pager-text").textContent = total
    ? `Rows ${fmtInt(offset + 1)}–${fmtInt(offset + shown)} of ${fmtInt(total)}`
    : "";
  $("#pager-prev").disabled = offset <= 0;
  $("#pager-next").disabled = offset + PAGE >= total;
}

async function loadPage(newOffset) {
  const errorBox = $("#rows-error");
  showAlert(errorBox, "");
  try {
    const data = await api(`/api/datasets/${encodeURIComponent(id)}/rows?offset=${newOffset}&limit=${PAGE}`);
    // Accept a bare list or an envelope like {rows: [...]}.
    const rows = Array.isArray(data) ? data : (data.rows || data.items || []);
    offset = newOffset;
    renderRows(rows);
    renderPager(rows.length);
  } catch (err) {
    showAlert(errorBox, `Could not load rows: ${err.message}`);
  }
}

function renderFacts() {
  document.title = `${dataset.name} · peftlab`;
  $("#dataset-name").textContent = dataset.name;
  $("#crumb-name").textContent = dataset.name;
  $("#dataset-created").textContent = `Uploaded ${fmtDate(dataset.created_at)}`;
  $("#stat-rows").textContent = fmtInt(dataset.num_rows);
  $("#stat-format").textContent = dataset.format;
  $("#stat-size").textContent = fmtBytes(dataset.size_bytes);
  $("#stat-sha").textContent = dataset.sha256 || "—";
  $("#columns-list").replaceChildren(...dataset.columns.map((c) => el("li", { class: "column-chip" },
    el("span", { class: "column-name" }, c.name), el("span", { class: "column-dtype" }, c.dtype))));
}

// ---- chat and instruction shapes: propose the column mapping of a chat fine-tuning run ----------
const ROLES = new Set(["system", "user", "assistant"]);
const SHAREGPT_FROM = new Set(["system", "human", "gpt", "user", "assistant"]);

function turnsOf(value) {
  if (typeof value === "string") {
    try { value = JSON.parse(value); } catch { return null; }
  }
  return Array.isArray(value) && value.length && value.every((t) => t && typeof t === "object") ? value : null;
}

// The first column whose preview cells are all lists of turns: {kind: "messages" | "sharegpt", column}.
function chatColumn(preview, names) {
  for (const name of names) {
    const cells = preview.map((row) => row[name]).filter((v) => v != null);
    const all = cells.map(turnsOf);
    if (!cells.length || all.some((t) => !t)) continue;
    const turns = all.flat();
    if (turns.every((t) => ROLES.has(t.role) && typeof t.content === "string")) return { kind: "messages", column: name };
    if (turns.every((t) => SHAREGPT_FROM.has(String(t.from).toLowerCase()) && typeof t.value === "string")) {
      return { kind: "sharegpt", column: name };
    }
  }
  return null;
}

function proposeChatRun() {
  const names = dataset.columns.map((c) => c.name);
  const found = chatColumn(dataset.preview || [], names);
  const params = new URLSearchParams({ dataset_id: id, task: "causal_lm" });
  let text;
  if (found) {
    params.set("columns.messages", found.column);
    text = found.kind === "messages"
      ? `The column “${found.column}” holds conversations of {role, content} turns.`
      : `The column “${found.column}” holds ShareGPT conversations ({from, value}; human/gpt become user/assistant).`;
  } else if (names.includes("instruction") && names.includes("output")) {
    params.set("columns.prompt", "instruction");
    params.set("columns.response", "output");
    if (names.includes("input")) params.set("columns.input", "input");
    params.set("columns.chat_template", "auto");
    text = "The columns instruction / input / output look like Alpaca data: each row becomes a user turn and an assistant turn.";
  } else {
    return;
  }
  $("#chat-shape-text").textContent = `${text} A causal LM run trains on the assistant turns only, in the base model's chat template (ChatML if it has none).`;
  $("#chat-run-link").href = `/runs/new?${params}`;
  $("#chat-shape").hidden = false;
}

// A text input per column, filled with its current name; saved with PATCH /api/datasets/{id}.
function renderRenameForm() {
  $("#rename-fields").replaceChildren(...dataset.columns.map((c, i) => el("div", { class: "field" },
    el("label", { for: `rename-${i}` }, `Column ${i + 1}`),
    el("input", { type: "text", id: `rename-${i}`, value: c.name, maxlength: "200", "data-column": c.name }))));
}

$("#rename-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const names = dataset.columns.map((_, i) => $(`#rename-${i}`).value.trim());
  const button = $("#rename-submit");
  button.disabled = true;
  showAlert($("#rename-error"), "");
  try {
    dataset = await api(`/api/datasets/${encodeURIComponent(id)}`, { method: "PATCH", json: { columns: names } });
    renderFacts();
    renderRenameForm();
    fillDistributionPicker();
    loadDistribution();
    loadPage(offset);
  } catch (err) {
    showAlert($("#rename-error"), err.message);
  } finally {
    button.disabled = false;
  }
});

// The label-like column first: what a person opening a dataset usually wants to see balanced.
const LABEL_NAMES = ["label", "labels", "class", "category", "target", "y"];

function fillDistributionPicker() {
  const select = $("#distribution-column");
  const previous = select.value;
  const names = dataset.columns.map((c) => c.name);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  const guess = names.find((n) => LABEL_NAMES.includes(n.toLowerCase()))
    || (dataset.has_header === false ? names[0] : names[names.length - 1]);
  select.value = names.includes(previous) ? previous : guess;
}

let distributionRequest = 0;
async function loadDistribution() {
  const column = $("#distribution-column").value;
  if (!column) return;
  const mine = ++distributionRequest;
  showAlert($("#distribution-error"), "");
  $("#distribution-summary").textContent = "Counting…";
  try {
    const d = await api(`/api/datasets/${encodeURIComponent(id)}/distribution?column=${encodeURIComponent(column)}`);
    if (mine !== distributionRequest) return; // the picker moved on
    const counted = d.rows_counted - d.missing;
    const top = d.values.length ? d.values[0].count : 1;
    const rows = d.values.map((v) => {
      const fill = el("span", { class: "prob-fill" });
      fill.style.width = `${(100 * v.count / top).toFixed(1)}%`; // through the CSSOM: the CSP forbids style=""
      return el("div", { class: "prob-row", "data-value": v.value, "data-count": String(v.count) },
        el("span", { class: "prob-label", title: v.value }, v.value),
        el("span", { class: "prob-bar" }, fill),
        el("span", { class: "prob-value" }, fmtInt(v.count)));
    });
    if (d.other) {
      rows.push(el("div", { class: "prob-row distribution-other", "data-count": String(d.other) },
        el("span", { class: "prob-label" }, "other values"), el("span", {}), el("span", { class: "prob-value" }, fmtInt(d.other))));
    }
    $("#distribution-list").replaceChildren(...rows);
    const parts = [`${fmtInt(d.distinct)} distinct value${d.distinct === 1 ? "" : "s"} in ${fmtInt(counted)} rows`];
    if (d.missing) parts.push(`${fmtInt(d.missing)} empty`);
    if (!d.complete) parts.push(`counted the first ${fmtInt(d.rows_counted)} of ${fmtInt(d.total_rows)} rows`);
    $("#distribution-summary").textContent = parts.join(" · ");
  } catch (err) {
    if (mine !== distributionRequest) return;
    $("#distribution-summary").textContent = "";
    $("#distribution-list").replaceChildren();
    showAlert($("#distribution-error"), `Could not count the values: ${err.message}`);
  }
}

$("#distribution-column").addEventListener("change", loadDistribution);

async function load() {
  try {
    dataset = await api(`/api/datasets/${encodeURIComponent(id)}`);
  } catch (err) {
    showAlert($("#dataset-error"), err.status === 404 ? "This dataset does not exist or was deleted." : err.message);
    $("#rows-body").replaceChildren();
    return;
  }
  renderFacts();
  proposeChatRun();
  renderRenameForm();
  fillDistributionPicker();
  loadDistribution();
  // The detail response already carries the first rows; the pager fetches the rest.
  const preview = (dataset.preview || []).slice(0, PAGE);
  renderRows(preview);
  renderPager(preview.length);
}

$("#pager-prev").addEventListener("click", () => loadPage(Math.max(0, offset - PAGE)));
$("#pager-next").addEventListener("click", () => loadPage(offset + PAGE));

$("#delete-dataset").addEventListener("click", async (e) => {
  const name = dataset ? dataset.name : `#${id}`;
  if (!window.confirm(`Delete dataset "${name}"? This cannot be undone.`)) return;
  const button = e.currentTarget;
  button.disabled = true;
  try {
    await api(`/api/datasets/${encodeURIComponent(id)}`, { method: "DELETE" });
    window.location.assign("/datasets");
  } catch (err) {
    // 409: runs still use it — the server's message says which.
    showAlert($("#dataset-error"), err.message);
    button.disabled = false;
  }
});

load();
