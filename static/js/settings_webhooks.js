// /settings → Notifications: a project's webhooks (add, send a test, delete) over /api/projects/{id}/webhooks.
import { $, api, el, emptyRow, fmtDate, showAlert } from "./common.js";

const projectSelect = $("#webhook-project");
const body = $("#webhooks-body");
const errorBox = $("#webhook-error");

function lastDelivery(hook) {
  if (hook.last_status == null && !hook.last_error) return "none yet";
  if (hook.last_delivered_at) return `delivered ${fmtDate(hook.last_delivered_at)} (HTTP ${hook.last_status})`;
  return `failing: ${hook.last_error}`;
}

function hookRow(projectId, hook) {
  const status = el("span", { class: "muted" });
  const test = el("button", { class: "btn btn-small", type: "button", onclick: async () => {
    status.textContent = "sending…";
    try {
      const res = await api(`/api/projects/${projectId}/webhooks/${hook.id}/test`, { method: "POST" });
      status.textContent = res.ok ? `test delivered (HTTP ${res.status})` : `test failed: ${res.error}`;
    } catch (err) { status.textContent = err.message; }
  } }, "Send test");
  const remove = el("button", { class: "btn btn-small btn-ghost-danger", type: "button", onclick: async () => {
    try { await api(`/api/projects/${projectId}/webhooks/${hook.id}`, { method: "DELETE" }); load(); }
    catch (err) { showAlert(errorBox, err.message); }
  } }, "Delete");
  return el("tr", { "data-webhook-id": hook.id },
    el("td", { class: "cell-wrap" }, el("code", {}, hook.url)), el("td", {}, hook.events.join(", ")),
    el("td", {}, lastDelivery(hook)), el("td", {}, test, " ", remove, " ", status));
}

async function load() {
  const projectId = projectSelect.value;
  if (!projectId) return;
  try {
    const hooks = await api(`/api/projects/${projectId}/webhooks`);
    body.replaceChildren(...(hooks.length ? hooks.map((h) => hookRow(projectId, h))
      : [emptyRow(4, "No webhooks for this project.")]));
  } catch (err) {
    showAlert(errorBox, err.message);
  }
}

async function init() {
  try {
    const projects = await api("/api/projects");
    projectSelect.replaceChildren(...projects.map((p) => el("option", { value: p.id }, `${p.name} (${p.role})`)));
    await load();
  } catch (err) {
    showAlert(errorBox, err.message);
  }
}

projectSelect.addEventListener("change", load);
$("#webhook-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showAlert(errorBox, "");
  const events = [...document.querySelectorAll("#webhook-events input:checked")].map((box) => box.value);
  try {
    await api(`/api/projects/${projectSelect.value}/webhooks`, { method: "POST",
      json: { url: $("#webhook-url").value.trim(), events } });
    $("#webhook-url").value = "";
    load();
  } catch (err) {
    showAlert(errorBox, err.message);
  }
});

init();
