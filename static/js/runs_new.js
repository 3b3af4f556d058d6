// /runs/new: build the POST /api/runs body from the form and show 422 errors beside their fields.
import { $, $$, api, el, fmtBytes, fmtCount, fmtInt, fmtPercent, methodLabel } from "./common.js";
import { describeLabelValues, readClassNames, writeClassNames } from "./class_names.js";

const form = $("#run-form");
const datasetSelect = $("#run-dataset");
const evalSelect = $("#run-eval-dataset");
const modelSelect = $("#run-model");
const taskSelect = $("#run-task");
const summary = $("#form-summary");
const submit = $("#run-submit");
const DEFAULT_MODEL = "minilm-l6";
const datasets = new Map();
const models = new Map();

// Likely column names per role, so a typical dataset needs no clicks.
const GUESSES = {
  text: ["text", "sentence", "content", "review", "document", "input", "question", "title"],
  text_pair: ["text_pair", "sentence2", "hypothesis", "premise2"],
  label: ["label", "labels", "class", "category", "target", "y"],
  prompt: ["prompt", "instruction", "question", "input"],
  response: ["response", "output", "answer", "completion", "target"],
  messages: ["messages", "conversations", "conversation", "chat", "dialog", "turns"],
  input: ["input", "context"],
};

const visible = (node) => !node.closest("[hidden]");

function lmMode() {
  return $("input[name=lm-mode]:checked").value;
}

function methodType() {
  return $("input[name=method]:checked").value;
}

// Show only the inputs that belong to the chosen task, LM mode and method.
function syncVisibility() {
  const task = taskSelect.value;
  $("#lm-mode-field").hidden = task !== "causal_lm";
  for (const field of $$("#column-fields .field")) {
    field.hidden = field.dataset.task !== task || Boolean(field.dataset.lmMode && !field.dataset.lmMode.split(" ").includes(lmMode()));
  }
  const method = methodType();
  for (const group of $$(".method-fields")) group.hidden = group.dataset.method !== method;
  applyShowIf(methodGroup());
  $("#eval-fraction-field").hidden = evalSelect.value !== "";
  $("#eval-split-seed-field").hidden = evalSelect.value !== "";
  // Accuracy and F1 are measured for classification, perplexity for causal LM.
  const best = $("#tr-metric_for_best");
  for (const option of best.options) option.hidden = option.disabled = Boolean(option.dataset.task) && option.dataset.task !== task;
  if (best.selectedOptions[0] && best.selectedOptions[0].disabled) best.value = "";
  for (const picker of $$("[data-kind=runs]", methodGroup())) loadRunPicker(picker);
  scheduleEstimate();
}

function methodGroup() {
  return $(`.method-fields[data-method="${CSS.escape(methodType())}"]`);
}

// A setting with data-show-if='{"init": "text"}' applies only while those settings have those values.
function applyShowIf(group) {
  if (!group) return;
  for (const field of $$("[data-show-if]", group)) {
    const conditions = JSON.parse(field.dataset.showIf);
    field.hidden = !Object.entries(conditions).every(([key, want]) => {
      const input = $(`[data-loc="method.${CSS.escape(key)}"]`, group);
      return input && readSetting(input) === want;
    });
  }
}

function fillColumnSelects() {
  const ds = datasets.get(Number(datasetSelect.value));
  const columns = ds ? ds.columns : [];
  for (const select of $$("#column-fields select:not([data-setting])")) {
    const role = select.dataset.column;
    const optional = select.hasAttribute("data-optional");
    const previous = select.value;
    const options = columns.map((c) => el("option", { value: c.name }, `${c.name} (${c.dtype})`));
    select.replaceChildren(...(optional || !columns.length ? [el("option", { value: "" }, columns.length ? "— none —" : "— pick a dataset —")] : []), ...options);
    const names = columns.map((c) => c.name);
    const guess = names.includes(previous) ? previous
      : (GUESSES[role] || []).find((g) => names.includes(g))
        ?? names.find((n) => (GUESSES[role] || []).includes(n.toLowerCase()));
    if (guess) select.value = guess;
    else if (!optional && names.length) select.value = role === "label" ? names[names.length - 1] : names[0];
  }
  $("#dataset-hint").textContent = ds ? `${fmtInt(ds.num_rows)} rows · ${ds.columns.length} columns · ${ds.format}` : "";
}

async function loadChoices() {
  const preselect = form.dataset.datasetId;
  try {
    const [dsList, modelData] = await Promise.all([api("/api/datasets"), api("/api/models")]);
    const list = Array.isArray(dsList) ? dsList : dsList.items || [];
    for (const d of list) datasets.set(d.id, d);
    if (!list.length) {
      datasetSelect.replaceChildren(el("option", { value: "" }, "No datasets yet"));
      showSummary(["Upload a dataset first: "], el("a", { href: "/datasets" }, "go to Datasets"));
    } else {
      datasetSelect.replaceChildren(el("option", { value: "" }, "Choose a dataset…"),
        ...list.map((d) => el("option", { value: d.id }, `${d.name} (${fmtInt(d.num_rows)} rows)`)));
    }
    evalSelect.replaceChildren(el("option", { value: "" }, "Hold out a share of the dataset"),
      ...list.map((d) => el("option", { value: d.id }, d.name)));
    if (preselect && datasets.has(Number(preselect))) datasetSelect.value = preselect;
    else if (list.length === 1) datasetSelect.value = String(list[0].id);

    const modelList = Array.isArray(modelData) ? modelData : modelData.items || [];
    for (const m of modelList) models.set(String(m.id), m);
    modelSelect.replaceChildren(...modelList.map((m) => el("option", { value: m.id }, m.name)));
    if (models.has(DEFAULT_MODEL)) modelSelect.value = DEFAULT_MODEL;
  } catch (err) {
    showSummary([`Could not load datasets and models: ${err.message}`]);
  }
  fillColumnSelects();
  describeModel();
  syncVisibility();
}

function describeModel() {
  const m = models.get(modelSelect.value);
  $("#model-hint").textContent = m
    ? [m.architecture, m.num_parameters ? `${fmtCount(m.num_parameters)} parameters` : null].filter(Boolean).join(" · ")
    : "";
}

// Empty → null; otherwise a number (or NaN text left as-is so the server names the problem).
function numberOrNull(input) {
  const raw = input.value.trim();
  if (raw === "") return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw;
}

function buildBody() {
  const columns = {};
  for (const select of $$("#column-fields select")) {
    if (visible(select) && select.value) columns[select.dataset.column] = select.value;
  }
  if (columns.label && visible($("#col-label_names")) && readClassNames() != null) columns.label_names = readClassNames();
  const training = {};
  for (const input of $$("[data-loc^='training.']")) {
    training[input.dataset.loc.slice(9)] = input.type === "checkbox" ? input.checked
      : input.dataset.kind === "tristate" ? { "": null, true: true, false: false }[input.value]
        : numberOrNull(input);
  }
  const evalId = evalSelect.value ? Number(evalSelect.value) : null;
  return {
    name: $("#run-name").value.trim() || null,
    dataset_id: datasetSelect.value ? Number(datasetSelect.value) : null,
    eval_dataset_id: evalId,
    eval_fraction: evalId == null ? numberOrNull($("#run-eval-fraction")) : 0.1,
    eval_split_seed: evalId == null ? numberOrNull($("#run-eval-split-seed")) : null,
    base_model: modelSelect.value || null,
    task: taskSelect.value,
    columns,
    method: buildMethod(),
    training,
  };
}

// One setting's value, by the kind its spec gave it (app/runs/method_form.py).
function readSetting(input) {
  switch (input.dataset.kind) {
    case "check": return input.checked;
    case "number": return numberOrNull(input);
    case "list": {
      const items = input.value.split(",").map((t) => t.trim()).filter(Boolean);
      return items.length ? items : null;
    }
    case "runs": return $$("input:checked", input).map((box) => Number(box.value));
    case "text": return input.value.trim() === "" ? null : input.value;
    case "choice": return input.value === "" ? null : input.value;
    default: return input.value;
  }
}

// The chosen method's settings, read from its group: data-loc "method.<field>" (hidden ones left out).
function buildMethod() {
  const method = { type: methodType() };
  for (const input of $$("[data-loc^='method.']", methodGroup())) {
    if (!visible(input)) continue;
    method[input.dataset.loc.slice("method.".length)] = readSetting(input);
  }
  return method;
}

// ---- run pickers (e.g. AdapterFusion's adapters): runs matching the spec's filter on this model and task

let clonedRunIds = []; // a cloned run's picked runs, ticked once the list loads

async function loadRunPicker(box) {
  const key = `${modelSelect.value}|${taskSelect.value}`;
  if (box.dataset.loaded === key) return;
  box.dataset.loaded = key;
  const filter = JSON.parse(box.dataset.runs);
  const checked = new Set([...$$("input:checked", box).map((i) => i.value), ...clonedRunIds]);
  try {
    const runs = (await api(`/api/runs?${new URLSearchParams(filter)}`))
      .filter((r) => r.base_model === modelSelect.value && r.task === taskSelect.value);
    if (box.dataset.loaded !== key) return; // the model or task changed meanwhile
    if (!runs.length) {
      box.replaceChildren(el("p", { class: "hint" },
        `No ${filter.status || ""} ${methodLabel(filter.method)} runs on this base model and task yet.`));
    } else {
      box.replaceChildren(...runs.map((r) => el("label", { class: "check" },
        el("input", { type: "checkbox", value: r.id, checked: checked.has(String(r.id)) }),
        ` ${r.name} `, el("span", { class: "muted" }, `#${r.id} · ${settingsSummary(r.config.method || {})}`))));
    }
  } catch (err) {
    delete box.dataset.loaded;
    box.replaceChildren(el("p", { class: "hint" }, `Could not load runs: ${err.message}`));
  }
  scheduleEstimate();
}

function settingsSummary(method) {
  return Object.entries(method).filter(([k, v]) => k !== "type" && v != null && typeof v !== "object")
    .map(([k, v]) => `${k} ${v}`).join(", ");
}

// ---- live trainable-parameter count (POST /api/models/{id}/estimate) ------------------------

let estimateTimer = null;
let estimateAbort = null;

// Listings carry no rows: a dataset's first rows come from GET /api/datasets/{id}, once per dataset.
const previews = new Map();

function previewOf(id) {
  if (!id) return Promise.resolve([]);
  if (!previews.has(id)) {
    previews.set(id, api(`/api/datasets/${encodeURIComponent(id)}`).then((d) => d.preview || [], () => []));
  }
  return previews.get(id);
}

function numLabels(preview) {
  // Distinct labels in the dataset's preview rows: a guess, good enough for the head's size.
  const column = $("#col-label").value;
  const values = new Set(preview.map((row) => row[column]).filter((v) => v != null));
  return Math.max(2, values.size);
}

function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(showEstimate, 250);
}

async function showEstimate() {
  const line = $("#param-estimate");
  if (!modelSelect.value) { line.textContent = ""; return; }
  if (estimateAbort) estimateAbort.abort();
  estimateAbort = new AbortController();
  const signal = estimateAbort.signal;
  const preview = await previewOf(datasetSelect.value);
  if (signal.aborted) return;
  const body = { task: taskSelect.value, num_labels: numLabels(preview), method: buildMethod(),
    training: memorySettings() };
  try {
    const est = await api(`/api/models/${encodeURIComponent(modelSelect.value)}/estimate`,
      { method: "POST", json: body, signal });
    line.classList.remove("muted");
    line.dataset.trainable = String(est.trainable_params);
    line.textContent = `Trainable parameters: ${est.exact ? "" : "≈ "}${fmtInt(est.trainable_params)} `
      + `(${fmtPercent(est.percent / 100, est.percent < 1 ? 3 : 1)} of the model)`;
    line.title = est.note || "";
    showMemory(est);
  } catch (err) {
    if (err.name === "AbortError") return;
    delete line.dataset.trainable;
    line.classList.add("muted");
    line.title = "";
    line.textContent = `Trainable parameters: — (${err.status === 422 && typeof err.detail !== "string"
      ? "check the method's settings" : err.message})`;
    showMemory(null, err);
  }
}

// The training settings the memory estimate reads (the others cannot change it, and a half-typed
// one elsewhere must not blank the figure). training.quantization is sent when the form has it.
const MEMORY_SETTINGS = ["batch_size", "max_length", "precision", "gradient_checkpointing", "packing", "quantization",
  "gpus", "distributed"];  // several GPUs: the figure is one process's

function memorySettings() {
  const training = buildBody().training;
  const picked = {};
  for (const key of MEMORY_SETTINGS) {
    if (key in training && training[key] !== null && training[key] !== "") picked[key] = training[key];
  }
  return picked;
}

const PART_LABELS = {
  weights: "weights", trainable_weights: "trainable weights", gradients: "gradients",
  optimizer_states: "AdamW states", activations: "activations", logits: "logits",
  dequantization_buffer: "dequantisation", workspace: "workspace",
};

function showMemory(est, err) {
  const total = $("#memory-total");
  const parts = $("#memory-parts");
  const list = $("#memory-workers");
  list.replaceChildren();
  if (!est || est.memory_bytes == null) {
    delete total.dataset.memoryBytes;
    total.classList.add("muted");
    total.textContent = err
      ? `Peak memory: — (${err.status === 422 && typeof err.detail !== "string" ? "check the training settings" : err.message})`
      : "Peak memory: — (the server does not know this model's shape)";
    parts.textContent = "";
    return;
  }
  const m = est.memory;
  total.classList.remove("muted");
  total.dataset.memoryBytes = String(est.memory_bytes);
  const where = m.device === "cuda" ? "a GPU" : "a CPU";
  total.textContent = `Peak memory: ≈ ${fmtBytes(est.memory_bytes)} (${m.precision}${m.quantization ? `, ${m.quantization} base` : ""}`
    + ` on ${where}, ${fmtInt(m.tokens)} tokens per batch${m.gradient_checkpointing ? ", gradient checkpointing" : ""})`;
  total.title = m.note || "";
  const shown = Object.entries(m.parts).filter(([, bytes]) => bytes > 0).sort((a, b) => b[1] - a[1])
    .map(([name, bytes]) => `${PART_LABELS[name] || name} ${fmtBytes(bytes)}`);
  const saving = m.gradient_checkpointing ? "" : ` · with gradient checkpointing the activations would be ${fmtBytes(m.activations_with_checkpointing)}`;
  parts.textContent = shown.join(" · ") + saving;
  if (!est.workers.length) {
    list.append(el("li", { class: "muted", id: "memory-no-workers" },
      "No worker was seen in the last hour: the run is queued and waits for one whose device fits it."));
    return;
  }
  for (const w of est.workers) {
    const device = w.device && w.device.name ? w.device.name : (w.device && w.device.kind) || "device";
    const needs = w.needed_bytes != null && w.needed_bytes !== est.memory_bytes ? `, needs ${fmtBytes(w.needed_bytes)} there` : "";
    list.append(el("li", { class: w.fits ? "fits" : "too-small", "data-worker": w.name, "data-fits": String(w.fits) },
      `${w.name} — ${device}, ${fmtBytes(w.memory_bytes)} (${fmtBytes(w.usable_bytes)} usable)${needs}: `
      + (w.fits ? "can take it" : "too small")));
  }
}

// ---- errors --------------------------------------------------------------------------------

function clearErrors() {
  summary.hidden = true;
  summary.replaceChildren();
  for (const node of $$(".field-error", form)) node.remove();
  for (const node of $$("[aria-invalid]", form)) node.removeAttribute("aria-invalid");
  for (const node of $$(".field.invalid", form)) node.classList.remove("invalid");
}

function showSummary(lines, extra) {
  summary.hidden = false;
  summary.replaceChildren(
    el("strong", {}, lines.length > 1 ? "Please fix these problems:" : "Could not start the run."),
    lines.length > 1 ? el("ul", {}, lines.map((l) => el("li", {}, l))) : el("p", {}, lines[0] || "", extra || null),
  );
}

// loc like ["body","method","lora","r"] → the visible input whose data-loc is "method.r".
function inputForLoc(loc) {
  const path = (loc || []).filter((p) => p !== "body").map(String);
  const candidates = [path];
  if (path[0] === "method" && path.length > 2) candidates.push([path[0], ...path.slice(2)]); // drop the union tag
  for (const cand of candidates) {
    for (let n = cand.length; n > 0; n--) {
      const key = cand.slice(0, n).join(".");
      const input = $$(`[data-loc="${CSS.escape(key)}"]`, form).find(visible);
      if (input) return input;
    }
  }
  return null;
}

function labelFor(input) {
  if (!input) return "";
  if (input.dataset.label) return input.dataset.label;
  const label = $(`label[for="${CSS.escape(input.id)}"]`);
  const text = label && Array.from(label.childNodes).find((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
  return text ? text.textContent.trim() : "";
}

function showErrors(detail) {
  const items = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }];
  const lines = [];
  let first = null;
  for (const item of items) {
    const msg = String(item.msg || "Invalid value").replace(/^Value error, /, "");
    const input = inputForLoc(item.loc);
    if (input) {
      const field = input.closest(".field");
      field.classList.add("invalid");
      input.setAttribute("aria-invalid", "true");
      const note = el("p", { class: "field-error", "data-error-for": input.dataset.loc }, msg);
      field.append(note);
      first = first || input;
      lines.push(`${labelFor(input)}: ${msg}`);
    } else {
      lines.push(msg);
    }
  }
  showSummary(lines);
  summary.focus();
  if (first) first.scrollIntoView({ block: "center", behavior: "smooth" });
}

// ---- wiring --------------------------------------------------------------------------------

datasetSelect.addEventListener("change", () => { fillColumnSelects(); scheduleEstimate(); });
modelSelect.addEventListener("change", () => { describeModel(); syncVisibility(); });
evalSelect.addEventListener("change", syncVisibility);
taskSelect.addEventListener("change", syncVisibility);
for (const radio of $$("input[name=lm-mode]")) radio.addEventListener("change", syncVisibility);
// Choosing a method fills in its preset learning rate (the spec's), then shows its settings.
for (const radio of $$("input[name=method]")) {
  radio.addEventListener("change", () => {
    $("#tr-learning_rate").value = radio.dataset.learningRate;
    syncVisibility();
  });
}
// Any method setting (including run pickers) changes the count, and may show or hide another.
for (const group of $$(".method-fields")) {
  group.addEventListener("input", scheduleEstimate);
  group.addEventListener("change", () => { applyShowIf(group); scheduleEstimate(); });
}
$("#col-label").addEventListener("change", scheduleEstimate);
// The training settings change the memory estimate.
for (const input of $$("[data-loc^='training.']")) {
  input.addEventListener("input", scheduleEstimate);
  input.addEventListener("change", scheduleEstimate);
}
const describeLabels = () => describeLabelValues(datasetSelect.value, taskSelect.value === "classification" ? $("#col-label").value : "");
for (const input of [$("#col-label"), datasetSelect, taskSelect]) input.addEventListener("change", describeLabels);

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors();
  // The two choices the server can only call "not an integer/string" get plain words here.
  const missing = [];
  if (!datasetSelect.value) missing.push({ loc: ["body", "dataset_id"], msg: "Choose a dataset." });
  if (!modelSelect.value) missing.push({ loc: ["body", "base_model"], msg: "Choose a base model." });
  if (missing.length) { showErrors(missing); return; }
  const seeds = Number($("#run-repeats").value || 1);
  if (!Number.isInteger(seeds) || seeds < 1 || seeds > 10) {
    showErrors([{ loc: [], msg: "Repeat with seeds: a whole number from 1 to 10." }]);
    return;
  }
  submit.disabled = true;
  submit.textContent = "Launching…";
  try {
    if (seeds > 1) {
      // k runs that differ only by seed: an experiment of the base config repeated (an empty grid).
      const base = buildBody();
      const name = base.name || `${base.method.type} on ${datasetSelect.selectedOptions[0]?.textContent.replace(/ \(.*$/, "") || "dataset"}`;
      const experiment = await api("/api/experiments", {
        method: "POST", json: { kind: "grid", name: name.slice(0, 160), base, grid: {}, repeats: seeds } });
      window.location.assign(`/experiments/${encodeURIComponent(experiment.id)}`);
      return;
    }
    const run = await api("/api/runs", { method: "POST", json: buildBody() });
    window.location.assign(`/runs/${encodeURIComponent(run.id)}`);
    return;
  } catch (err) {
    showErrors(err.detail != null ? experimentErrors(err.detail) : err.message);
  }
  submit.disabled = false;
  submit.textContent = "Launch run";
});

// An experiment's errors name the base config's fields (["body", "base", …]) or say "every run: …" for a
// problem all its seeds share: shown beside the same fields as a single run's.
function experimentErrors(detail) {
  if (!Array.isArray(detail)) return detail;
  return detail.map((item) => {
    const loc = (item.loc || []).filter((p) => p !== "body");
    return { ...item, loc: loc[0] === "base" ? loc.slice(1) : loc, msg: String(item.msg || "").replace(/^every run: [^:]*: /, "").replace(/^every run: /, "") };
  });
}

// ---- clone: /runs/new?clone=ID prefills every field from that run's config -------------------

function setValue(input, value) {
  if (!input || input.dataset.kind === "runs") return; // run pickers tick clonedRunIds once loaded
  if (input.type === "checkbox") input.checked = Boolean(value);
  else input.value = value == null ? "" : (Array.isArray(value) ? value.join(", ") : String(value));
}

async function prefillFrom(runId) {
  let run;
  try {
    run = await api(`/api/runs/${encodeURIComponent(runId)}`);
  } catch (err) {
    showSummary([`Could not load run #${runId} to clone: ${err.message}`]);
    return;
  }
  const cfg = run.config || {};
  $(".page-head p.muted").textContent = `Prefilled from run #${run.id} (${run.name}). Change what you want to try differently.`;
  $("#run-name").value = `${run.name} (clone)`.slice(0, 200);
  if (datasets.has(cfg.dataset_id)) datasetSelect.value = String(cfg.dataset_id);
  else showSummary([`The dataset of run #${run.id} is gone or not yours to use: choose another.`]);
  evalSelect.value = cfg.eval_dataset_id != null && datasets.has(cfg.eval_dataset_id) ? String(cfg.eval_dataset_id) : "";
  setValue($("#run-eval-fraction"), cfg.eval_fraction ?? 0.1);
  setValue($("#run-eval-split-seed"), cfg.eval_split_seed);
  if (models.has(String(cfg.base_model))) modelSelect.value = String(cfg.base_model);
  taskSelect.value = cfg.task || "classification";
  const columns = cfg.columns || {};
  $(`input[name=lm-mode][value="${lmModeOf(columns)}"]`).checked = true;
  const method = cfg.method || { type: "lora" };
  clonedRunIds = Object.values(method).filter(Array.isArray).flat().filter(Number.isInteger).map(String);
  const radio = $(`input[name=method][value="${CSS.escape(method.type)}"]`);
  if (radio) radio.checked = true;
  fillColumnSelects();
  describeModel();
  syncVisibility(); // shows the fields of this task and method before they are filled
  for (const select of $$("#column-fields select")) {
    if (visible(select) && columns[select.dataset.column] != null) select.value = columns[select.dataset.column];
  }
  writeClassNames(columns.label_names);
  const group = $(`.method-fields[data-method="${CSS.escape(method.type)}"]`);
  for (const input of group ? $$("[data-loc^='method.']", group) : []) {
    const key = input.dataset.loc.slice("method.".length);
    if (key in method) setValue(input, method[key]);
  }
  for (const input of $$("[data-loc^='training.']")) {
    const key = input.dataset.loc.slice("training.".length);
    if (key in (cfg.training || {})) setValue(input, cfg.training[key]);
  }
  syncVisibility(); // settings shown only with others (data-show-if) follow the prefilled values
  scheduleEstimate();
  describeLabels();
}

function lmModeOf(columns) {
  if (columns.messages) return "chat";
  return columns.prompt ? "pair" : "text";
}

// ---- /runs/new?task=causal_lm&columns.messages=messages: the dataset page's proposed mapping --------
function prefillFromQuery(params) {
  const columns = {};
  for (const [key, value] of params) if (key.startsWith("columns.")) columns[key.slice("columns.".length)] = value;
  const task = params.get("task");
  if (!task && !Object.keys(columns).length) return;
  if (task && [...taskSelect.options].some((o) => o.value === task)) taskSelect.value = task;
  if (taskSelect.value === "causal_lm") $(`input[name=lm-mode][value="${lmModeOf(columns)}"]`).checked = true;
  syncVisibility();
  for (const select of $$("#column-fields select")) {
    const want = columns[select.dataset.column];
    if (visible(select) && want != null && [...select.options].some((o) => o.value === want)) select.value = want;
  }
  syncVisibility();
}

syncVisibility();
const query = new URLSearchParams(window.location.search);
const cloneId = query.get("clone");
loadChoices().then(() => {
  if (cloneId) return prefillFrom(cloneId);
  prefillFromQuery(query);
  return describeLabels();
});
