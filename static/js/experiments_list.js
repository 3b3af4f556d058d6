// /experiments: the list of experiments (refreshed every 3 s) and the form that launches one:
// "methods" (every checked method on one dataset), "grid" (one run per combination of values) or
// "search" (Optuna picks each trial's values from ranges and choices).
import { $, $$, api, el, emptyRow, fmtDate, fmtInt, showAlert } from "./common.js";

const POLL_MS = 3000;
const form = $("#experiment-form");
const formError = $("#experiment-form-error");
const datasetSelect = $("#exp-dataset");
const modelSelect = $("#exp-model");
const taskSelect = $("#exp-task");
const submit = $("#exp-submit");
const datasets = new Map();
const GUESSES = {
  text: ["text", "sentence", "content", "review", "document", "input", "question", "title"],
  label: ["label", "labels", "class", "category", "target", "y", "sentiment"],
  prompt: ["prompt", "instruction", "question", "input"],
  response: ["response", "output", "answer", "completion", "target"],
};
// Suggestions for grid keys (any dotted key of the run config works).
const GRID_KEYS = ["training.learning_rate", "method.r", "method.alpha", "method.dropout", "training.batch_size",
  "training.seed", "training.epochs", "training.max_steps", "method.reduction_factor", "method.num_virtual_tokens"];

// ---- the list -------------------------------------------------------------------------------

function progressText(statuses) {
  const order = ["running", "queued", "succeeded", "failed", "cancelled"];
  return order.filter((s) => statuses[s]).map((s) => `${statuses[s]} ${s}`).join(" · ") || "—";
}

async function refreshList() {
  const body = $("#experiments-body");
  try {
    const list = await api("/api/experiments");
    showAlert($("#experiments-error"), "");
    if (!list.length) {
      body.replaceChildren(emptyRow(6, "No experiments yet: launch one with the form below."));
      return;
    }
    body.replaceChildren(...list.map((x) => {
      const href = `/experiments/${encodeURIComponent(x.id)}`;
      return el("tr", { "data-experiment-id": x.id },
        el("td", { class: "num" }, el("a", { href }, `#${x.id}`)),
        el("td", { class: "name-cell" }, el("a", { href }, x.name)),
        el("td", {}, `${{ grid: "Grid", search: "Search" }[x.kind] || "Methods"}${x.spec.repeats > 1 ? ` × ${x.spec.repeats} seeds` : ""}`),
        el("td", { class: "num" }, fmtInt(x.run_count)),
        el("td", { class: "small" }, progressText(x.statuses)),
        el("td", { class: "nowrap" }, fmtDate(x.created_at)));
    }));
  } catch (err) {
    showAlert($("#experiments-error"), `Could not load the experiments: ${err.message}`);
  }
}

// ---- the form -------------------------------------------------------------------------------

function kind() {
  return $("input[name=exp-kind]:checked").value;
}

function syncVisibility() {
  for (const section of $$("[data-kind]", form)) section.hidden = section.dataset.kind !== kind();
  for (const field of $$("[data-task]", form)) field.hidden = field.dataset.task !== taskSelect.value;
  updateGridCount();
  syncBudget();
}

function fillColumns() {
  const ds = datasets.get(Number(datasetSelect.value));
  const names = ds ? ds.columns.map((c) => c.name) : [];
  for (const select of $$("select[data-column]", form)) {
    const role = select.dataset.column;
    select.replaceChildren(...(names.length ? names.map((n) => el("option", { value: n }, n))
      : [el("option", { value: "" }, "— pick a dataset —")]));
    const guess = names.find((n) => GUESSES[role].includes(n.toLowerCase()));
    if (guess) select.value = guess;
    else if (names.length) select.value = role === "label" || role === "response" ? names[names.length - 1] : names[0];
  }
}

async function loadChoices() {
  try {
    const [dsList, modelList] = await Promise.all([api("/api/datasets"), api("/api/models")]);
    for (const d of dsList) datasets.set(d.id, d);
    datasetSelect.replaceChildren(el("option", { value: "" }, dsList.length ? "Choose a dataset…" : "No datasets yet"),
      ...dsList.map((d) => el("option", { value: d.id }, `${d.name} (${fmtInt(d.num_rows)} rows)`)));
    if (dsList.length === 1) datasetSelect.value = String(dsList[0].id);
    modelSelect.replaceChildren(...modelList.map((m) => el("option", { value: m.id }, m.name)));
    if (modelList.some((m) => m.id === "minilm-l6")) modelSelect.value = "minilm-l6";
  } catch (err) {
    showAlert(formError, `Could not load datasets and models: ${err.message}`);
  }
  fillColumns();
}

function addGridRow(key = "", values = "") {
  const row = el("div", { class: "grid-row form-grid" },
    el("div", { class: "field" },
      el("label", {}, "Setting", el("input", { type: "text", class: "grid-key", list: "grid-key-list", value: key,
        placeholder: "e.g. training.learning_rate", autocomplete: "off" }))),
    el("div", { class: "field field-wide" },
      el("label", {}, "Values", el("input", { type: "text", class: "grid-values", value: values,
        placeholder: "comma-separated, e.g. 1e-4, 5e-4", autocomplete: "off" }))),
    el("div", { class: "field" }, el("button", { type: "button", class: "btn btn-small btn-ghost-danger",
      onclick: (e) => { e.currentTarget.closest(".grid-row").remove(); updateGridCount(); } }, "Remove")));
  $("#exp-grid-rows").append(row);
  updateGridCount();
}

// "1e-4, 5e-4, true, query" → [0.0001, 0.0005, true, "query"]: JSON where it parses, text otherwise.
function parseValues(text) {
  return text.split(",").map((v) => v.trim()).filter(Boolean).map((v) => {
    try { return JSON.parse(v); } catch { return v; }
  });
}

function gridSpec() {
  const grid = {};
  for (const row of $$(".grid-row", form)) {
    const key = $(".grid-key", row).value.trim();
    const values = parseValues($(".grid-values", row).value);
    if (key) grid[key] = values;
  }
  return grid;
}

function repeats() {
  const n = Number($("#exp-repeats").value);
  return Number.isInteger(n) && n >= 1 ? n : 1;
}

function updateGridCount() {
  const grid = gridSpec();
  const keys = Object.keys(grid);
  const k = repeats();
  const count = keys.reduce((n, key) => n * grid[key].length, 1) * k;
  $("#exp-grid-count").textContent = keys.length || k > 1
    ? `${count} run${count === 1 ? "" : "s"}${k > 1 ? ` (${k} seeds each)` : ""}` : "";
}

// A budget (methods experiments): the same steps, tokens or seconds for every method; with one, the
// epoch and max-steps fields no longer limit the runs.
const BUDGET_HINTS = {
  steps: "Optimizer steps per run (training.max_steps).",
  tokens: "Training tokens per run, padding not counted (training.max_tokens).",
  seconds: "Seconds of training per run, evaluations not counted (training.max_seconds).",
};

function budgetKind() {
  return kind() === "methods" ? $("#exp-budget-kind").value : "";
}

function syncBudget() {
  const chosen = $("#exp-budget-kind").value;
  $("#exp-budget-amount-field").hidden = !chosen;
  $("#exp-budget-hint").textContent = BUDGET_HINTS[chosen] || "";
  const limited = Boolean(budgetKind());
  for (const id of ["#exp-tr-epochs", "#exp-tr-max_steps"]) {
    $(id).disabled = limited;
    $(id).title = limited ? "The budget ends each run." : "";
  }
}

const DISTRIBUTIONS = [["log_uniform", "Log-uniform"], ["uniform", "Uniform"], ["integer", "Integer"], ["choice", "Choices"]];

function syncSpaceRow(row) {
  const choice = $(".space-type", row).value === "choice";
  for (const f of $$(".space-range", row)) f.hidden = choice;
  $(".space-choices-field", row).hidden = !choice;
}

function addSpaceRow(key = "", type = "log_uniform", low = "", high = "", choices = "") {
  const row = el("div", { class: "space-row form-grid" },
    el("div", { class: "field" },
      el("label", {}, "Setting", el("input", { type: "text", class: "space-key", list: "grid-key-list", value: key,
        placeholder: "e.g. training.learning_rate", autocomplete: "off" }))),
    el("div", { class: "field" },
      el("label", {}, "Distribution", el("select", { class: "space-type", onchange: (e) => syncSpaceRow(e.target.closest(".space-row")) },
        DISTRIBUTIONS.map(([v, t]) => el("option", { value: v, ...(v === type ? { selected: "" } : {}) }, t))))),
    el("div", { class: "field space-range" },
      el("label", {}, "Low", el("input", { type: "text", class: "space-low", value: low, inputmode: "decimal", autocomplete: "off" }))),
    el("div", { class: "field space-range" },
      el("label", {}, "High", el("input", { type: "text", class: "space-high", value: high, inputmode: "decimal", autocomplete: "off" }))),
    el("div", { class: "field field-wide space-choices-field" },
      el("label", {}, "Choices", el("input", { type: "text", class: "space-choices", value: choices,
        placeholder: "comma-separated, e.g. 4, 8, 16", autocomplete: "off" }))),
    el("div", { class: "field" }, el("button", { type: "button", class: "btn btn-small btn-ghost-danger",
      onclick: (e) => e.currentTarget.closest(".space-row").remove() }, "Remove")));
  $("#exp-space-rows").append(row);
  syncSpaceRow(row);
}

// A number where the text is one (the server says what is wrong with the rest).
function numberOrText(raw) {
  const text = raw.trim();
  const n = Number(text);
  return text !== "" && Number.isFinite(n) ? n : text;
}

function spaceSpec() {
  const space = {};
  for (const row of $$(".space-row", form)) {
    const key = $(".space-key", row).value.trim();
    if (!key) continue;
    const type = $(".space-type", row).value;
    space[key] = type === "choice" ? { type, choices: parseValues($(".space-choices", row).value) }
      : { type, low: numberOrText($(".space-low", row).value), high: numberOrText($(".space-high", row).value) };
  }
  return space;
}

function numberOrNull(input) {
  const raw = input.value.trim();
  if (raw === "") return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw;
}

function shared() {
  const columns = {};
  for (const select of $$("select[data-column]", form)) {
    if (!select.closest("[hidden]") && select.value) columns[select.dataset.column] = select.value;
  }
  const training = {};
  for (const input of $$("[data-training]", form)) {
    if (input.disabled) continue; // epochs and max steps under a budget
    const value = numberOrNull(input);
    if (value !== null || input.dataset.training === "max_steps") training[input.dataset.training] = value;
  }
  if (training.learning_rate === undefined) delete training.learning_rate;
  return {
    dataset_id: Number(datasetSelect.value), base_model: modelSelect.value, task: taskSelect.value,
    eval_fraction: numberOrNull($("#exp-eval-fraction")) ?? 0, columns, training,
  };
}

function buildBody() {
  const name = $("#exp-name").value.trim();
  const common = shared();
  const k = repeats();
  const seeds = k > 1 ? { repeats: k } : {};
  if (kind() === "methods") {
    const budget = budgetKind() ? { budget: { kind: budgetKind(), amount: numberOrNull($("#exp-budget-amount")) } } : {};
    return { kind: "methods", name, ...common, methods: $$("input[name=exp-method]:checked").map((b) => b.value), ...budget, ...seeds };
  }
  const method = kind() === "search" ? $("#exp-search-method") : $("#exp-grid-method");
  const training = { ...common.training };
  // A grid's base config is a plain run config: without a learning rate it would get POST /api/runs's
  // default, so the chosen method's default rate is filled in here.
  if (training.learning_rate === undefined) {
    training.learning_rate = Number(method.selectedOptions[0].dataset.learningRate);
  }
  const { training: _, ...rest } = common;
  const base = { ...rest, method: { type: method.value }, training };
  if (kind() === "grid") return { kind: "grid", name, base, grid: gridSpec(), ...seeds };
  const metric = $("#exp-search-metric").value;
  return {
    kind: "search", name, base, space: spaceSpec(),
    trials: numberOrNull($("#exp-search-trials")) ?? 20, parallelism: numberOrNull($("#exp-search-parallelism")) ?? 1,
    objective: metric ? { metric } : null, sampler: $("#exp-search-sampler").value,
    seed: numberOrNull($("#exp-search-seed")) ?? 0, pruner: { type: $("#exp-search-pruner").value },
  };
}

function showErrors(detail) {
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  const lines = items.map((item) => {
    const loc = (item.loc || []).filter((p) => p !== "body");
    if (loc[0] === "search") loc.shift(); // the request's kind, which FastAPI puts in the path
    const msg = String(item.msg || "Invalid value").replace(/^Value error, /, "");
    return loc.length && loc[0] !== "runs" ? `${loc.join(".")}: ${msg}` : msg;
  });
  formError.hidden = false;
  formError.className = "alert alert-error";
  formError.replaceChildren(el("strong", {}, "Could not launch the experiment:"), el("ul", {}, lines.map((l) => el("li", {}, l))));
  formError.focus();
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  showAlert(formError, "");
  const problems = [];
  if (!$("#exp-name").value.trim()) problems.push({ msg: "Give the experiment a name." });
  if (!datasetSelect.value) problems.push({ msg: "Choose a dataset." });
  if (!modelSelect.value) problems.push({ msg: "Choose a base model." });
  if (kind() === "methods" && !$$("input[name=exp-method]:checked").length) problems.push({ msg: "Check at least one method." });
  if (kind() === "grid" && !Object.keys(gridSpec()).length && repeats() < 2) {
    problems.push({ msg: "Add at least one setting to the grid (or run the base with 2 or more seeds)." });
  }
  if (kind() === "search" && !Object.keys(spaceSpec()).length) problems.push({ msg: "Add at least one setting to search over." });
  if (budgetKind() && !(Number($("#exp-budget-amount").value) >= 1)) problems.push({ msg: "Give the budget: a whole number of 1 or more." });
  if (problems.length) { showErrors(problems); return; }
  submit.disabled = true;
  submit.textContent = "Launching…";
  try {
    const experiment = await api("/api/experiments", { method: "POST", json: buildBody() });
    window.location.assign(`/experiments/${encodeURIComponent(experiment.id)}`);
    return;
  } catch (err) {
    showErrors(err.detail != null ? err.detail : err.message);
  }
  submit.disabled = false;
  submit.textContent = "Launch experiment";
});

form.append(el("datalist", { id: "grid-key-list" }, GRID_KEYS.map((k) => el("option", { value: k }))));
for (const radio of $$("input[name=exp-kind]")) radio.addEventListener("change", syncVisibility);
taskSelect.addEventListener("change", syncVisibility);
datasetSelect.addEventListener("change", fillColumns);
$("#exp-grid-rows").addEventListener("input", updateGridCount);
$("#exp-grid-add").addEventListener("click", () => addGridRow());
$("#exp-repeats").addEventListener("input", updateGridCount);
$("#exp-budget-kind").addEventListener("change", syncBudget);
addGridRow("training.learning_rate", "1e-4, 5e-4");
addGridRow("method.r", "4, 8");
$("#exp-space-add").addEventListener("click", () => addSpaceRow());
addSpaceRow("training.learning_rate", "log_uniform", "1e-5", "1e-2");
syncVisibility();
loadChoices();
refreshList();
setInterval(refreshList, POLL_MS);
