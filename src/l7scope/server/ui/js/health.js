// Health classification of nodes and edges, with user-configurable thresholds (kept in
// localStorage). Colours match the CSS variables in app.css.

export const COLORS = { ok: "#2e9e5b", warn: "#d9961a", fail: "#d64545", idle: "#8a94a6" };
export const LABELS = { ok: "healthy", warn: "degraded", fail: "failing", idle: "no requests" };

export const DEFAULT_THRESHOLDS = Object.freeze({
  errWarnPct: 1,    // error rate (4xx + 5xx) at or above which an element is degraded
  errFailPct: 10,   // ... failing
  p99WarnMs: 500,   // p99 latency at or above which an element is degraded
  p99FailMs: 2000,  // ... failing
});

const KEY = "l7scope.thresholds";

export function loadThresholds(storage = globalThis.localStorage) {
  try {
    const saved = JSON.parse(storage?.getItem(KEY) || "null");
    return sanitize({ ...DEFAULT_THRESHOLDS, ...(saved || {}) });
  } catch {
    return { ...DEFAULT_THRESHOLDS };
  }
}

export function saveThresholds(th, storage = globalThis.localStorage) {
  const clean = sanitize(th);
  storage?.setItem(KEY, JSON.stringify(clean));
  return clean;
}

function sanitize(th) {
  const out = {};
  for (const k of Object.keys(DEFAULT_THRESHOLDS)) {
    const v = Number(th[k]);
    out[k] = Number.isFinite(v) && v >= 0 ? v : DEFAULT_THRESHOLDS[k];
  }
  if (out.errFailPct < out.errWarnPct) out.errFailPct = out.errWarnPct;
  if (out.p99FailMs < out.p99WarnMs) out.p99FailMs = out.p99WarnMs;
  return out;
}

/** "ok" | "warn" | "fail" | "idle" from request count, error ratio (0..1) and p99 (ns or null). */
export function classify(count, errorRatio, p99Ns, th) {
  if (!count) return "idle";
  const errPct = (errorRatio || 0) * 100;
  const p99Ms = p99Ns === null || p99Ns === undefined ? null : p99Ns / 1e6;
  if (errPct >= th.errFailPct || (p99Ms !== null && p99Ms >= th.p99FailMs)) return "fail";
  if (errPct >= th.errWarnPct || (p99Ms !== null && p99Ms >= th.p99WarnMs)) return "warn";
  return "ok";
}
