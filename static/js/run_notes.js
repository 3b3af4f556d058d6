// The run page's "Tags and notes" card: shows them, and edits them with PATCH /api/runs/{id}.
import { $, api, el, showAlert } from "./common.js";

export function setupNotes(run, onSaved) {
  const form = $("#notes-form");
  const view = $("#notes-view");
  const edit = $("#edit-notes");

  function show(r) {
    const tags = r.tags || [];
    $("#run-tags").replaceChildren(...tags.map((t) => el("span", { class: "tag" }, t)));
    $("#run-notes").textContent = r.notes || (tags.length ? "" : "No tags or notes yet.");
    $("#run-notes").classList.toggle("muted", !r.notes);
  }

  function open(editing) {
    form.hidden = !editing;
    view.hidden = editing;
    edit.hidden = editing;
    if (editing) {
      $("#tags-input").value = (run.tags || []).join(", ");
      $("#notes-input").value = run.notes || "";
      showAlert($("#notes-error"), "");
      $("#tags-input").focus();
    }
  }

  edit.addEventListener("click", () => open(true));
  $("#notes-cancel").addEventListener("click", () => open(false));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const tags = $("#tags-input").value.split(",").map((t) => t.trim()).filter(Boolean);
    const save = $("#notes-save");
    save.disabled = true;
    try {
      run = await api(`/api/runs/${encodeURIComponent(run.id)}`, { method: "PATCH", json: { tags, notes: $("#notes-input").value } });
      show(run);
      open(false);
      if (onSaved) onSaved(run);
    } catch (err) {
      showAlert($("#notes-error"), err.message);
    }
    save.disabled = false;
  });
  show(run);
  return { update(r) { if (form.hidden) { run = r; show(r); } } };
}
