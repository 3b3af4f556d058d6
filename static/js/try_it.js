// The run page's "Try it" panel: POST /api/runs/{id}/predict and show the answers side by side
// (classification: class probabilities as bars; causal LM: the generated text).
// Inputs and outputs are user text: everything goes through el()/textContent.
import { $, api, el, fmtPercent, showAlert } from "./common.js";

const MAX_INPUTS = 64;

function probabilityBars(output) {
  const entries = Object.entries(output.probs || {}).sort((a, b) => b[1] - a[1]);
  return el("div", { class: "prob-list" }, entries.map(([label, p]) => {
    const fill = el("span", { class: "prob-fill" });
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    return el("div", { class: `prob-row${label === output.label ? " prob-top" : ""}`, "data-label": label, "data-prob": p },
      el("span", { class: "prob-label" }, label),
      el("span", { class: "prob-bar", role: "img", "aria-label": `${label}: ${fmtPercent(p, 1)}` }, fill),
      el("span", { class: "prob-value" }, fmtPercent(p, 1)));
  }));
}

function answerView(output, task) {
  if (task === "classification") return probabilityBars(output);
  return el("pre", { class: "generated" }, output.text || "(nothing generated)");
}

function renderResults(box, inputs, data, task) {
  box.replaceChildren(...inputs.map((input, i) => {
    const columns = [el("div", { class: "try-answer", "data-model": "run" },
      el("h3", {}, "This run"), answerView(data.outputs[i], task))];
    if (data.base_outputs) {
      columns.push(el("div", { class: "try-answer", "data-model": "base" },
        el("h3", {}, "Base model"), answerView(data.base_outputs[i], task)));
    }
    return el("article", { class: "try-result" },
      el("p", { class: "try-input" }, input),
      el("div", { class: `try-answers${columns.length > 1 ? " try-compare" : ""}` }, columns));
  }));
}

export function setupTryIt(run) {
  const panel = $("#try-it");
  if (!panel.hidden) return; // already set up
  panel.hidden = false;
  const causal = run.task === "causal_lm";
  $("#try-generation").hidden = !causal;
  $("#try-inputs").placeholder = causal ? "A prompt to continue, one per line" : "A text to classify, one per line";
  const form = $("#try-form");
  const submit = $("#try-submit");
  const error = $("#try-error");
  const results = $("#try-results");

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showAlert(error, "");
    const inputs = $("#try-inputs").value.split("\n").map((l) => l.trim()).filter(Boolean);
    if (!inputs.length) { showAlert(error, "Type at least one input (one per line)."); return; }
    if (inputs.length > MAX_INPUTS) { showAlert(error, `At most ${MAX_INPUTS} inputs at a time (you gave ${inputs.length}).`); return; }
    const body = { inputs, compare_base: $("#try-compare").checked };
    if (causal) {
      body.max_new_tokens = Number($("#try-max-new-tokens").value);
      body.temperature = Number($("#try-temperature").value);
    }
    submit.disabled = true;
    submit.textContent = "Predicting…";
    try {
      const data = await api(`/api/runs/${encodeURIComponent(run.id)}/predict`, { method: "POST", json: body });
      renderResults(results, inputs, data, run.task);
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
