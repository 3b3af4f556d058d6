// The run page's "Try it" panel: POST /api/runs/{id}/predict and show the answers side by side
// (rendered by answers.js, shared with the playground).
import { renderAnswers } from "./answers.js";
import { CHAT_PLACEHOLDER, continueButton, isChatRun, parseConversation } from "./chat_input.js";
import { $, api, showAlert } from "./common.js";

const MAX_INPUTS = 64;

export function setupTryIt(run) {
  const panel = $("#try-it");
  if (!panel.hidden) return; // already set up
  panel.hidden = false;
  const causal = run.task === "causal_lm";
  $("#try-generation").hidden = !causal;
  const chat = isChatRun(run);
  $("#try-inputs").placeholder = chat ? CHAT_PLACEHOLDER
    : causal ? "A prompt to continue, one per line" : "A text to classify, one per line";
  if (chat) $("#try-inputs-hint").textContent = "One conversation: a turn per “role: text” line (system, user, assistant); the answer is the next assistant turn.";
  const form = $("#try-form");
  const submit = $("#try-submit");
  const error = $("#try-error");
  const results = $("#try-results");

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showAlert(error, "");
    const box = $("#try-inputs");
    let inputs, shown;
    if (chat) {
      const parsed = parseConversation(box.value);
      if (parsed.error) { showAlert(error, parsed.error); return; }
      inputs = [parsed.turns];
      shown = [box.value.trim()];
    } else {
      inputs = shown = box.value.split("\n").map((l) => l.trim()).filter(Boolean);
      if (!inputs.length) { showAlert(error, "Type at least one input (one per line)."); return; }
      if (inputs.length > MAX_INPUTS) { showAlert(error, `At most ${MAX_INPUTS} inputs at a time (you gave ${inputs.length}).`); return; }
    }
    const body = { inputs, compare_base: $("#try-compare").checked };
    if (causal) {
      body.max_new_tokens = Number($("#try-max-new-tokens").value);
      body.temperature = Number($("#try-temperature").value);
    }
    submit.disabled = true;
    submit.textContent = "Predicting…";
    try {
      const data = await api(`/api/runs/${encodeURIComponent(run.id)}/predict`, { method: "POST", json: body });
      renderAnswers(results, shown, data, run.task);
      if (chat) results.append(continueButton(box, data.outputs[0].text || ""));
    } catch (err) {
      showAlert(error, err.message);
    }
    submit.disabled = false;
    submit.textContent = "Predict";
  });
}

// "Download merged model" only where the run saved one (LoRA).
export async function showMergedLink(run) {
  try {
    const artifacts = await api(`/api/runs/${encodeURIComponent(run.id)}/artifacts`);
    $("#download-merged").hidden = !artifacts.some((a) => a.kind === "merged");
  } catch { /* the adapter link still works */ }
}
