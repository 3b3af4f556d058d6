// The run page's live log tail: what the worker logged while training this run, from the server's log
// stream (GET /api/runs/{id}/logs/events). The stream replays every line after the last one it sent
// (EventSource reconnects with Last-Event-ID) and says `end` once the run has ended and its last lines
// are out; the server reads new lines once per run for all its viewers, not once per viewer. A hidden tab
// closes its log stream and opens it again, after the last line it has, when shown: a browser keeps only
// six connections to one server over HTTP/1.1, for all its tabs together.
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

  let stream = null;
  let paused = false; // closed by us while the tab is hidden (not by an error answer)
  function open() {
    stream = new EventSource(`${base}/logs/events?after=${lastSeq}`);
    stream.addEventListener("log", (e) => append(JSON.parse(e.data)));
    stream.addEventListener("end", () => {
      ended = true;
      stream.close();
      if (!box.childElementCount) empty.textContent = "This run logged nothing.";
      box.dataset.ended = "1";
    });
    stream.addEventListener("error", () => {
      // EventSource reconnects by itself (resuming after the last line); a deleted run or a signed-out
      // browser gets an error answer instead, and the stream stays closed.
      if (ended) stream.close();
    });
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

  follow.addEventListener("change", () => { if (follow.checked) box.scrollTop = box.scrollHeight; });
}
