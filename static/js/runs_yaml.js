// New run → "Start from a YAML file…": send the chosen file (a run page's Config (YAML) export, or any
// file holding the body of POST /api/runs) to POST /api/runs/yaml, then open the new run. The server parses
// and validates it exactly like the form's own submit; its message shows here when it refuses.
import { ApiError, csrfToken, detailMessage } from "/static/js/common.js";

const input = document.getElementById("run-yaml");
const errorBox = document.getElementById("run-yaml-error");

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  errorBox.focus?.();
}

input?.addEventListener("change", async () => {
  const file = input.files && input.files[0];
  if (!file) return;
  errorBox.hidden = true;
  try {
    const res = await fetch("/api/runs/yaml", {
      method: "POST",
      headers: { "Content-Type": "application/yaml", Accept: "application/json", "X-CSRF-Token": csrfToken() },
      body: await file.text(),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, body && body.detail !== undefined ? body.detail : `HTTP ${res.status}`);
    window.location.assign(`/runs/${encodeURIComponent(body.id)}`);
  } catch (err) {
    showError(`${file.name}: ${err instanceof ApiError ? detailMessage(err.detail) || err.message : "Cannot reach the server."}`);
  } finally {
    input.value = "";  // choosing the same file again after fixing it fires change again
  }
});
