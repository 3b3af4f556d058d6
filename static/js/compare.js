// /compare?runs=1,2,3: the comparison view for the runs named in the URL.
import { $ } from "./common.js";
import { renderComparison } from "./compare_view.js";

const ids = (new URLSearchParams(window.location.search).get("runs") || "").split(",").filter(Boolean);
$("#compare-subtitle").textContent = `${ids.length} run${ids.length === 1 ? "" : "s"}: curves, efficiency, figures and the settings that differ.`;
renderComparison($("#comparison"), ids);
