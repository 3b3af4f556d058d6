// The run page's live log tail: what the worker logged while training this run. While the run is live its
// lines come on the page's one event stream (GET /api/runs/{id}/events?logs=true: runs_detail.js hands them
// here); a run that had ended when the page opened reads them from the log stream alone
// (GET /api/runs/{id}/logs/events). Either stream replays every line after the last one it sent and says
// `end` once the run has ended and its last lines are out; the server reads new lines once per run for all
// its viewers, not once per viewer. A browser keeps six HTTP/1.1 connections per server for all its tabs:
// hence one stream per page, closed while the tab is hidden and resumed after its last event when shown.
import { $, el } from "./common.js";

const clock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });

export function setupLogTail(base) {
  const box = $("#log-tail");
  const empty = $("#log-empty");
  const follow = $("#log-follow");
  let lastSeq = 0;
  let ended = false;

  function append(line) {
    if (line.seq <= lastSeq) return; // already shown (a replay after a reconnect)
    lastSeq = line.seq;
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    box.append(el("div", { class: `log-line log-${line.level.toLowerCase()}`, "data-seq": line.seq },
      el("span", { class: "log-time" }, clock(line.time)), " ",
      el("span", { class: "log-level" }, line.level), " ",
      el("span", { class: "log-message" }, line.message)));
    box.dataset.lines = String(box.childElementCount);
    box.hidden = false;
    empty.hidden = true;
    if (follow.checked || nearBottom) box.scrollTop = box.scrollHeight;
  }

  function end() {
    ended = true;
    if (!box.childElementCount) empty.textContent = "This run logged nothing.";
    box.dataset.ended = "1";
  }

  // The log stream alone, for a run that had ended when the page opened (no live stream to ride on).
  function openOwnStream() {
    let stream = null;
    let paused = false; // closed by us while the tab is hidden (not by an error answer)
    function open() {
      stream = new EventSource(`${base}/logs/events?after=${lastSeq}`);
      stream.addEventListener("log", (e) => append(JSON.parse(e.data)));
      stream.addEventListener("end", () => { stream.close(); end(); });
      stream.addEventListener("error", () => { if (ended) stream.close(); });
    }
    document.addEventListener("visibilitychange", () => {
      if (ended) return;
      if (document.hidden && stream && stream.readyState !== EventSource.CLOSED) {
        stream.close();
        paused = true;
      } else if (!document.hidden && paused) {
        paused = false;
        open();
      }
    });
    if (document.hidden) paused = true; // opened in a background tab: the stream starts when it is shown
    else open();
  }

  follow.addEventListener("change", () => { if (follow.checked) box.scrollTop = box.scrollHeight; });
  return { append, end, openOwnStream };
}
