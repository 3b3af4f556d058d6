// /models: registered base models and the register form.
import { $, api, el, emptyRow, fmtCount, fmtInt, showAlert } from "./common.js";

const form = $("#model-form");
const submit = $("#model-submit");

async function loadModels() {
  const body = $("#models-body");
  try {
    const data = await api("/api/models");
    const models = Array.isArray(data) ? data : data.items || [];
    body.replaceChildren(...(models.length ? models.map((m) => el("tr", { "data-model-id": m.id },
      el("td", {}, el("code", {}, m.id)),
      el("td", {}, m.name),
      el("td", { class: "break" }, el("code", {}, m.source)),
      el("td", {}, m.architecture || "—"),
      el("td", { class: "num", title: m.num_parameters == null ? null : fmtInt(m.num_parameters) }, fmtCount(m.num_parameters)),
    )) : [emptyRow(5, "No models registered.")]));
  } catch (err) {
    body.replaceChildren(emptyRow(5, "Could not load models."));
    showAlert($("#models-error"), err.message);
  }
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("#model-name").value.trim();
  const source = $("#model-source").value.trim();
  showAlert($("#model-form-ok"), "");
  if (!name || !source) {
    showAlert($("#model-form-error"), "Give the model a name and a source.");
    return;
  }
  showAlert($("#model-form-error"), "");
  submit.disabled = true;
  submit.textContent = "Checking the model…";
  try {
    const model = await api("/api/models", { method: "POST", json: { name, source } });
    showAlert($("#model-form-ok"), `Registered “${model.name}” as ${model.id}.`, "success");
    form.reset();
    loadModels();
  } catch (err) {
    showAlert($("#model-form-error"), err.message);
  }
  submit.disabled = false;
  submit.textContent = "Register model";
});

loadModels();
