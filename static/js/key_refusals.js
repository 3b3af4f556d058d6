// The warning about workers that refuse the server's task messages (templates/_key_refusals.html), redrawn from
// GET /api/workers. Each worker's `warning` is the server's verdict (live, refused recently), so no rule lives here.
import { $, el } from "./common.js";

export function drawKeyRefusals(workers) {
  const node = $("#key-refusals");
  if (!node) return;
  const warned = workers.filter((w) => w.warning);
  node.querySelector("ul").replaceChildren(...warned.map((w) =>
    el("li", {}, "Worker ", el("code", {}, w.name), ` ${w.warning}.`)));
  node.hidden = !warned.length;
}
