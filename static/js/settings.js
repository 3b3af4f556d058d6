// /settings: API tokens (create, revoke), projects and their members, users (admins).
import { $, api, el, emptyRow, fmtDate, showAlert } from "./common.js";

async function loadTokens() {
  const body = $("#tokens-body");
  try {
    const tokens = await api("/api/tokens");
    body.replaceChildren(...(tokens.length ? tokens.map(tokenRow) : [emptyRow(6, "No tokens yet.")]));
  } catch (err) {
    showAlert($("#token-error"), err.message);
  }
}

function tokenRow(t) {
  const revoke = t.revoked_at ? null : el("button", { class: "btn btn-small btn-ghost-danger", type: "button",
    onclick: async () => {
      try { await api(`/api/tokens/${t.id}`, { method: "DELETE" }); loadTokens(); }
      catch (err) { showAlert($("#token-error"), err.message); }
    } }, "Revoke");
  return el("tr", { "data-token-id": t.id },
    el("td", {}, t.name), el("td", {}, el("code", {}, `${t.prefix}…`)), el("td", {}, fmtDate(t.created_at)),
    el("td", {}, t.last_used_at ? fmtDate(t.last_used_at) : "never"),
    el("td", {}, t.revoked_at ? `revoked ${fmtDate(t.revoked_at)}` : "active"), el("td", {}, revoke));
}

$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showAlert($("#token-error"), "");
  try {
    const created = await api("/api/tokens", { method: "POST", json: { name: $("#token-name").value.trim() || "token" } });
    $("#token-value").textContent = created.token;
    $("#token-created").hidden = false;
    $("#token-name").value = "";
    loadTokens();
  } catch (err) {
    showAlert($("#token-error"), err.message);
  }
});

async function loadProjects() {
  const container = $("#projects");
  try {
    const projects = await api("/api/projects");
    const cards = await Promise.all(projects.map(async (p) => {
      const members = await api(`/api/projects/${p.id}/members`);
      const list = el("ul", { class: "member-list" }, ...members.map((m) => el("li", {},
        `${m.username} (${m.role})`,
        p.role === "owner" && m.role !== "owner" ? el("button", { class: "btn btn-small btn-ghost-danger", type: "button",
          onclick: async () => {
            try { await api(`/api/projects/${p.id}/members/${m.user_id}`, { method: "DELETE" }); loadProjects(); }
            catch (err) { showAlert($("#projects-error"), err.message); }
          } }, "Remove") : null)));
      const share = p.role === "owner" ? shareForm(p) : null;
      return el("div", { class: "project", "data-project-id": p.id }, el("h3", {}, `${p.name} · ${p.role}`), list, share);
    }));
    container.replaceChildren(...cards);
  } catch (err) {
    showAlert($("#projects-error"), err.message);
  }
}

function shareForm(project) {
  const input = el("input", { type: "text", placeholder: "username", maxlength: 64, "aria-label": `Share ${project.name} with` });
  return el("form", { class: "inline-form", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api(`/api/projects/${project.id}/members`, { method: "POST", json: { username: input.value.trim() } });
      loadProjects();
    } catch (err) {
      showAlert($("#projects-error"), err.message);
    }
  } }, input, el("button", { class: "btn btn-small", type: "submit" }, "Share"));
}

$("#project-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/api/projects", { method: "POST", json: { name: $("#project-name").value.trim() } });
    $("#project-name").value = "";
    loadProjects();
  } catch (err) {
    showAlert($("#projects-error"), err.message);
  }
});

async function loadUsers() {
  const body = $("#users-body");
  if (!body) return;
  const users = await api("/api/users");
  body.replaceChildren(...users.map((u) => el("tr", {}, el("td", {}, u.username),
    el("td", {}, u.is_admin ? "admin" : "user"), el("td", {}, fmtDate(u.created_at)))));
}

const userForm = $("#user-form");
if (userForm) {
  userForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert($("#user-error"), "");
    try {
      await api("/api/users", { method: "POST", json: {
        username: $("#user-name").value.trim(), password: $("#user-password").value, is_admin: $("#user-admin").checked } });
      userForm.reset();
      loadUsers();
    } catch (err) {
      showAlert($("#user-error"), err.message);
    }
  });
}

loadTokens();
loadProjects();
loadUsers();
