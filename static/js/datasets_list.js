// /datasets: list of datasets and the drag-and-drop upload.
import { $, api, csrfToken, detailMessage, el, emptyRow, fmtBytes, fmtDate, fmtInt, showAlert } from "./common.js";

const form = $("#upload-form");
const fileInput = $("#upload-file");
const zone = $("#dropzone");
const zoneText = $("#dropzone-text");
const submit = $("#upload-submit");
const errorBox = $("#upload-error");
const progressWrap = $("#upload-progress");
const progressFill = $("#upload-progress-fill");
const progressText = $("#upload-progress-text");
const formatSelect = $("#upload-format");
const headerField = $("#header-field");

let chosen = null;

function choose(file) {
  chosen = file || null;
  showAlert(errorBox, "");
  zoneText.replaceChildren();
  if (chosen) {
    zone.classList.add("has-file");
    zoneText.append(el("strong", {}, chosen.name), ` · ${fmtBytes(chosen.size)} — click to choose another`);
  } else {
    zone.classList.remove("has-file");
    zoneText.append(el("strong", {}, "Drop a file here"), " or click to choose one");
  }
  submit.disabled = !chosen;
}

fileInput.addEventListener("change", () => choose(fileInput.files[0]));

// Drag-and-drop: dragenter/over must preventDefault or the browser opens the file.
for (const type of ["dragenter", "dragover"]) {
  zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("dragging"); });
}
for (const type of ["dragleave", "dragend", "drop"]) {
  zone.addEventListener(type, () => zone.classList.remove("dragging"));
}
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) choose(file);
});

// The header question only makes sense for delimited text.
function syncHeaderField() {
  headerField.hidden = !["auto", "csv", "tsv"].includes(formatSelect.value);
}
formatSelect.addEventListener("change", syncHeaderField);
syncHeaderField();

function setBusy(busy) {
  submit.disabled = busy || !chosen;
  submit.textContent = busy ? "Uploading…" : "Upload";
  fileInput.disabled = busy;
  zone.classList.toggle("disabled", busy);
}

function setProgress(fraction, text) {
  progressWrap.hidden = false;
  progressFill.style.width = `${Math.round(fraction * 100)}%`;
  progressText.textContent = text;
}

// XMLHttpRequest rather than fetch: fetch has no upload progress events.
function upload() {
  const data = new FormData();
  data.append("file", chosen, chosen.name);
  const name = $("#upload-name").value.trim();
  if (name) data.append("name", name);
  if (formatSelect.value !== "auto") data.append("format", formatSelect.value);
  const header = $("#upload-header").value;
  if (!headerField.hidden && header !== "auto") data.append("has_header", header);

  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/datasets");
  xhr.setRequestHeader("Accept", "application/json");
  xhr.setRequestHeader("X-CSRF-Token", csrfToken());
  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    const f = e.loaded / e.total;
    setProgress(f, f < 1 ? `Uploading… ${Math.round(f * 100)}%` : "Reading and checking the file…");
  });
  xhr.addEventListener("load", () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { body = null; }
    if (xhr.status >= 200 && xhr.status < 300 && body && body.id != null) {
      setProgress(1, "Done. Opening the dataset…");
      window.location.assign(`/datasets/${encodeURIComponent(body.id)}`);
      return;
    }
    const msg = (body && detailMessage(body.detail)) || `Upload failed (HTTP ${xhr.status}).`;
    fail(msg);
  });
  xhr.addEventListener("error", () => fail("The upload was interrupted. Check your connection and try again."));
  setBusy(true);
  showAlert(errorBox, "");
  setProgress(0, "Uploading… 0%");
  xhr.send(data);
}

function fail(message) {
  setBusy(false);
  progressWrap.hidden = true;
  showAlert(errorBox, message);
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (chosen) upload();
});

async function loadDatasets() {
  const body = $("#datasets-body");
  try {
    const datasets = await api("/api/datasets");
    const list = Array.isArray(datasets) ? datasets : (datasets.items || []);
    if (!list.length) {
      body.replaceChildren(emptyRow(5, "No datasets yet. Upload one above to get started."));
      return;
    }
    body.replaceChildren(...list.map((d) => el("tr", {},
      el("td", {}, el("a", { href: `/datasets/${encodeURIComponent(d.id)}` }, d.name)),
      el("td", {}, el("span", { class: "tag" }, d.format)),
      el("td", { class: "num" }, fmtInt(d.num_rows)),
      el("td", { class: "num" }, fmtBytes(d.size_bytes)),
      el("td", { class: "nowrap" }, fmtDate(d.created_at)),
    )));
  } catch (err) {
    body.replaceChildren(emptyRow(5, "Could not load datasets."));
    showAlert($("#datasets-error"), err.message);
  }
}

loadDatasets();
