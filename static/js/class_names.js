// New run form: the optional "Class names" of a classification run's label values (columns.label_names).
// Typed as "World, Sports, Business, Sci/Tech" (one per value, in the order shown below the field) or as
// "1=World, 2=Sports" (value=name). The hint lists the label column's values, counted by the server.
import { $, api } from "./common.js";

const input = $("#col-label_names");
const hint = $("#label-values-hint");

// "" → null (no names); "a=b, c=d" → {a: "b", c: "d"}; otherwise a list. Blanks are kept so the server
// can say which name is empty.
export function readClassNames() {
  const raw = input.value.trim();
  if (!raw) return null;
  const items = raw.split(",").map((t) => t.trim());
  if (items.every((t) => t.includes("="))) {
    return Object.fromEntries(items.map((t) => {
      const at = t.indexOf("=");
      return [t.slice(0, at).trim(), t.slice(at + 1).trim()];
    }));
  }
  return items;
}

export function writeClassNames(value) {
  if (value == null) input.value = "";
  else if (Array.isArray(value)) input.value = value.join(", ");
  else input.value = Object.entries(value).map(([k, v]) => `${k}=${v}`).join(", ");
}

// Natural order, as the server reads a list of names: numbers as numbers when every value is an integer.
function naturalOrder(values) {
  const ints = values.every((v) => /^[+-]?\d+$/.test(v.trim()));
  return [...values].sort(ints ? (a, b) => Number(a) - Number(b) || (a < b ? -1 : 1) : (a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

let asked = 0;
export async function describeLabelValues(datasetId, column) {
  const mine = ++asked;
  hint.textContent = "";
  if (!datasetId || !column) return;
  try {
    const d = await api(`/api/datasets/${encodeURIComponent(datasetId)}/distribution?column=${encodeURIComponent(column)}`);
    if (mine !== asked) return;
    const values = naturalOrder(d.values.map((v) => v.value));
    if (d.other || values.length > 20) {
      hint.textContent = `${column} has ${d.distinct.toLocaleString()} distinct values: too many to name here.`;
    } else {
      hint.textContent = `Values of ${column}, in order: ${values.join(", ")}. Name them in this order, or as value=name.`;
    }
    hint.dataset.values = JSON.stringify(values);
  } catch {
    if (mine === asked) hint.textContent = "";
  }
}
