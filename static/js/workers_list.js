// /workers: each training worker's device, memory, current run and last report (GET /api/workers).
import { $, api, el, emptyRow, fmtBytes, fmtDate, parseTime, showAlert } from "./common.js";
import { drawKeyRefusals } from "./key_refusals.js";

const STALE_MS = 3 * 60 * 1000; // no report for 3 minutes (several missed heartbeats): stopped

// device.quantization: the training.quantization kinds bitsandbytes runs on the worker (absent: not reported).
function quantizationNote(kinds) {
  if (!Array.isArray(kinds)) return "";
  return el("span", { class: "muted quantization" }, ` · quantisation: ${kinds.length ? kinds.join(", ") : "none"}`);
}

async function loadWorkers() {
  const body = $("#workers-body");
  try {
    const workers = await api("/api/workers");
    drawKeyRefusals(workers);
    body.replaceChildren(...(workers.length ? workers.map((w) => {
      const stale = Date.now() - parseTime(w.last_seen).getTime() > STALE_MS;
      return el("tr", { "data-worker": w.name, class: stale ? "muted" : null },
        el("td", {}, el("code", {}, w.name),
          w.warning ? el("span", { class: "worker-refusals", title: w.warning }, ` · refuses messages (${w.refused_messages})`) : ""),
        el("td", {}, `${(w.device.kind || "?").toUpperCase()} · ${w.device.name || "unknown"}`,
          quantizationNote(w.device.quantization)),
        el("td", { class: "num" }, w.memory_bytes == null ? "—" : fmtBytes(w.memory_bytes)),
        el("td", {}, w.run_id == null ? "idle" : el("a", { href: `/runs/${w.run_id}` }, `#${w.run_id}`)),
        el("td", {}, `${fmtDate(w.last_seen)}${stale ? " (not reporting)" : ""}`),
      );
    }) : [emptyRow(5, "No worker has reported yet. Start one with `peftlab worker`.")]));
    showAlert($("#workers-error"), "");
  } catch (err) {
    body.replaceChildren(emptyRow(5, "Could not load workers."));
    showAlert($("#workers-error"), err.message);
  }
}

loadWorkers();
setInterval(loadWorkers, 15000);
