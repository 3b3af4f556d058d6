// The run page's live log tail: what the worker logged while training this run, polled from
// GET /api/runs/{id}/logs?after=SEQ every 2 s while the run is active, and a little after it ends
// (the worker stores its last lines just after the final status).
import { $, api, el } from "./common.js";

const POLL_MS = 2000;
const PAGE = 1000; // lines per request; a finished run's log comes in a few pages
const AFTER_END_POLLS = 2;

const clock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });

export function setupLogTail(base, currentStatus, isTerminal) {
  const box = $("#log-tail");
  const empty = $("#log-empty");
  const follow = $("#log-follow");
  let after = 0;
  let pollsAfterEnd = 0;

  function append(lines) {
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    box.append(...lines.map((l) => el("div", { class: `log-line log-${l.level.toLowerCase()}`, "data-seq": l.seq },
      el("span", { class: "log-time" }, clock(l.time)), " ",
      el("span", { class: "log-level" }, l.level), " ",
      el("span", { class: "log-message" }, l.message))));
    box.dataset.lines = String(box.childElementCount);
    box.hidden = false;
    empty.hidden = true;
    if (follow.checked || nearBottom) box.scrollTop = box.scrollHeight;
  }

  async function poll() {
    try {
      for (;;) {
        const page = await api(`${base}/logs?after=${after}&limit=${PAGE}`);
        if (page.lines.length) append(page.lines);
        after = page.last_seq;
        if (page.lines.length < PAGE) break;
      }
    } catch (err) {
      if (err.status === 404) return; // the run was deleted: nothing more will come
      /* otherwise the next poll retries; the tail is a convenience */
    }
    if (isTerminal(currentStatus())) {
      pollsAfterEnd += 1;
      if (pollsAfterEnd > AFTER_END_POLLS) {
        if (!box.childElementCount) empty.textContent = "This run logged nothing.";
        return;
      }
    }
    setTimeout(poll, POLL_MS);
  }

  follow.addEventListener("change", () => { if (follow.checked) box.scrollTop = box.scrollHeight; });
  poll();
}
