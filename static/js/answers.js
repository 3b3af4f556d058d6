// How a prediction answer looks, wherever one is shown (the run page's "Try it", the playground):
// classification → class probabilities as bars; causal LM → the generated text. Every input and
// output is user text, so everything goes through el()/textContent.
import { el, fmtPercent } from "./common.js";

export function probabilityBars(output) {
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

export function answerView(output, task) {
  if (task === "classification") return probabilityBars(output);
  return el("pre", { class: "generated" }, output.text || "(nothing generated)");
}

// One card per input with the run's answer and, when the response has them, the base model's beside it.
// data: a POST /api/runs/{id}/predict response. The base model is always on the left and the adapted one on
// its right (before → after), on the run page's Try it and in the playground alike.
export function renderAnswers(box, inputs, data, task, { runTitle = "This run", baseTitle = "Base model" } = {}) {
  box.replaceChildren(...inputs.map((input, i) => {
    const columns = [el("div", { class: "try-answer", "data-model": "run" },
      el("h3", {}, runTitle), answerView(data.outputs[i], task))];
    if (data.base_outputs) {
      const base = el("div", { class: "try-answer", "data-model": "base" },
        el("h3", {}, baseTitle), answerView(data.base_outputs[i], task));
      columns.unshift(base);
    }
    return el("article", { class: "try-result" },
      el("p", { class: "try-input" }, input),
      el("div", { class: `try-answers${columns.length > 1 ? " try-compare" : ""}` }, columns));
  }));
}
