// /playground: pick a succeeded run, type inputs, and see the base model's and the adapted model's
// answers side by side (POST /api/runs/{id}/predict with compare_base; rendering from answers.js).
import { renderAnswers } from "./answers.js";
import { CHAT_PLACEHOLDER, continueButton, isChatRun, parseConversation } from "./chat_input.js";
import { $, api, el, methodLabel, showAlert } from "./common.js";

const MAX_INPUTS = 64;
const form = $("#playground-form");
const runSelect = $("#playground-run");
const inputs = $("#playground-inputs");
const submit = $("#playground-submit");
const error = $("#playground-error");
const results = $("#playground-results");
const runs = new Map();

function chosenRun() {
  return runs.get(Number(runSelect.value)) || null;
}

// The controls that fit the chosen run's task, and ?run=ID in the address so the view can be shared.
function syncRun() {
  const run = chosenRun();
  const causal = run && run.task === "causal_lm";
  $("#playground-generation").hidden = !causal;
  const chat = isChatRun(run);
  inputs.placeholder = chat ? CHAT_PLACEHOLDER : causal ? "A prompt to continue, one per line" : "A text to classify, one per line";
  $("#playground-inputs-hint").textContent = chat
    ? "One conversation: a turn per “role: text” line (system, user, assistant); the answer is the next assistant turn."
    : "Up to 64 lines.";
  const link = $("#playground-run-link");
  link.hidden = !run;
  if (run) link.href = `/runs/${encodeURIComponent(run.id)}`;
  $("#playground-run-hint").textContent = run
    ? `${methodLabel(run.method)} on ${run.base_model} · ${run.task === "causal_lm" ? "causal LM" : "classification"}`
    : "Succeeded runs you can see.";
  const url = new URL(window.location.href);
  if (run) url.searchParams.set("run", run.id); else url.searchParams.delete("run");
  window.history.replaceState(null, "", url);
  results.replaceChildren();
  showAlert(error, "");
}

async function loadRuns() {
  try {
    const list = await api("/api/runs?status=succeeded");
    for (const run of list) runs.set(run.id, run);
    if (!list.length) {
      runSelect.replaceChildren(el("option", { value: "" }, "No succeeded runs yet"));
      showAlert(error, "Train a run first: the playground needs a succeeded run.", "info");
      submit.disabled = true;
      return;
    }
    runSelect.replaceChildren(el("option", { value: "" }, "Choose a run…"),
      ...list.map((r) => el("option", { value: r.id }, `#${r.id} ${r.name} (${methodLabel(r.method)})`)));
    const wanted = Number(form.dataset.runId);
    if (wanted && runs.has(wanted)) runSelect.value = String(wanted);
    else if (wanted) showAlert(error, `Run #${wanted} is not a succeeded run you can see; choose another.`);
  } catch (err) {
    showAlert(error, `Could not load the runs: ${err.message}`);
    return;
  }
  if (runSelect.value) syncRun();
}

runSelect.addEventListener("change", syncRun);

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  showAlert(error, "");
  const run = chosenRun();
  if (!run) { showAlert(error, "Choose a run."); return; }
  const chat = isChatRun(run);
  let lines, sent;
  if (chat) {
    const parsed = parseConversation(inputs.value);
    if (parsed.error) { showAlert(error, parsed.error); return; }
    lines = [inputs.value.trim()];
    sent = [parsed.turns];
  } else {
    lines = sent = inputs.value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (!lines.length) { showAlert(error, "Type at least one input (one per line)."); return; }
    if (lines.length > MAX_INPUTS) { showAlert(error, `At most ${MAX_INPUTS} inputs at a time (you gave ${lines.length}).`); return; }
  }
  const body = { inputs: sent, compare_base: true };
  if (run.task === "causal_lm") {
    body.max_new_tokens = Number($("#playground-max-new-tokens").value);
    body.temperature = Number($("#playground-temperature").value);
  }
  submit.disabled = true;
  submit.textContent = "Asking both models…";
  try {
    const data = await api(`/api/runs/${encodeURIComponent(run.id)}/predict`, { method: "POST", json: body });
    renderAnswers(results, lines, data, run.task,
      { baseTitle: `Base model (${run.base_model})`, runTitle: `Adapted: run #${run.id}` });
    if (chat) results.append(continueButton(inputs, data.outputs[0].text || ""));
  } catch (err) {
    showAlert(error, err.message);
  }
  submit.disabled = false;
  submit.textContent = "Compare answers";
});

loadRuns();
