// Shared helpers for every page: API calls, DOM building, formatting.
// All user-supplied strings go through textContent (see el()), never innerHTML,
// so a dataset cell holding "<script>" renders as text.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detailMessage(detail) || `Request failed (HTTP ${status})`);
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI errors are {"detail": "text"} or {"detail": [{loc, msg, type}, ...]}.
export function detailMessage(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const loc = (d.loc || []).filter((p) => p !== "body").join(".");
      return loc ? `${loc}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  if (typeof detail === "object" && detail.msg) return detail.msg;
  return JSON.stringify(detail);
}

// The session's CSRF token (from the layout's meta tag): every write from a page sends it.
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// fetch() wrapper: sends/parses JSON and throws ApiError with a readable message on 4xx/5xx.
export async function api(path, { method = "GET", json, signal } = {}) {
  const opts = { method, signal, headers: { Accept: "application/json" } };
  if (method !== "GET" && method !== "HEAD") opts.headers["X-CSRF-Token"] = csrfToken();
  if (json !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "Cannot reach the server. Check your connection and try again.");
  }
  const text = await res.text();
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch { body = null; }
  }
  if (!res.ok) {
    const detail = body && body.detail !== undefined ? body.detail : null;
    throw new ApiError(res.status, detail || `${res.status} ${res.statusText}`.trim());
  }
  return body;
}

// el("td", {class: "num", title: x}, "text", childNode) — text children become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) {
      // Only real listeners: a string "onclick" attribute would be inline code (blocked by CSP).
      if (typeof value === "function") node.addEventListener(key.slice(2), value);
    }
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// Server timestamps may come without a zone (SQLite drops it); they are UTC.
export function parseTime(value) {
  if (!value) return null;
  const s = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDate(value) {
  const d = value instanceof Date ? value : parseTime(value);
  if (!d) return "—";
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function fmtInt(n) {
  return n == null ? "—" : Math.round(n).toLocaleString("en-US");
}

export function fmtNumber(n, digits = 4) {
  if (n == null || Number.isNaN(n)) return "—";
  if (n !== 0 && (Math.abs(n) < 1e-3 || Math.abs(n) >= 1e6)) return n.toExponential(2);
  return Number(n.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

// 22_713_216 → "22.7 M"
export function fmtCount(n) {
  if (n == null) return "—";
  const units = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
  for (const [size, unit] of units) if (Math.abs(n) >= size) return `${(n / size).toFixed(1)} ${unit}`;
  return String(n);
}

export function fmtBytes(n) {
  if (n == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtPercent(fraction, digits = 1) {
  if (fraction == null) return "—";
  return `${(fraction * 100).toFixed(digits)}%`;
}

export function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, "0")}m`;
}

// Seconds between started_at and finished_at (or now while still running).
export function runDuration(run) {
  const start = parseTime(run.started_at);
  if (!start) return null;
  const end = parseTime(run.finished_at) || new Date();
  return (end - start) / 1000;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function badge(status) {
  return el("span", { class: `badge badge-${status}`, "data-status": status }, status);
}

export function progressBar(fraction, label) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(pct), "aria-label": label || "Progress" },
    el("div", { class: "progress-fill" }));
  bar.firstChild.style.width = `${pct}%`;
  return bar;
}

export function setProgress(bar, fraction) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  bar.firstElementChild.style.width = `${pct}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
}

// A one-line alert box; kind: "error" | "info" | "success".
export function showAlert(container, message, kind = "error") {
  container.replaceChildren();
  if (!message) { container.hidden = true; return; }
  container.hidden = false;
  container.className = `alert alert-${kind}`;
  container.setAttribute("role", kind === "error" ? "alert" : "status");
  container.append(document.createTextNode(message));
}

// The method registry's titles, which the layout puts on <body> (app/templating.py).
export const METHOD_LABELS = JSON.parse(document.body.dataset.methodTitles || "{}");

export function methodLabel(type) {
  return METHOD_LABELS[type] || type || "—";
}

// Empty-state row spanning the whole table.
export function emptyRow(colspan, text) {
  return el("tr", { class: "empty" }, el("td", { colspan }, text));
}
