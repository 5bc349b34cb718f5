// The server's query API (docs/api.md). Every call returns the parsed JSON answer or throws an
// ApiError carrying the server's {"error": {code, message, position?, field?}}.

import { showLogin } from "./login.js";

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || "http_error";
    this.position = typeof error?.position === "number" ? error.position : null;
    this.field = error?.field ?? null;
  }
}

async function post(path, body, signal) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { code: "unreachable", message: `server unreachable: ${e.message}` });
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    if (e.name === "AbortError") throw e;
    data = null;
  }
  if (resp.status === 401) showLogin();
  if (!resp.ok) throw new ApiError(resp.status, data?.error || { message: `HTTP ${resp.status} from ${path}` });
  if (data === null || typeof data !== "object") throw new ApiError(resp.status, { code: "bad_answer", message: `${path} answered without a JSON object` });
  return data;
}

/** One request at a time per kind: a newer call aborts the older one still in flight. */
export class Api {
  constructor() {
    this.inflight = new Map();
  }

  async call(kind, path, body) {
    this.inflight.get(kind)?.abort();
    const ctl = new AbortController();
    this.inflight.set(kind, ctl);
    try {
      return await post(path, body, ctl.signal);
    } finally {
      if (this.inflight.get(kind) === ctl) this.inflight.delete(kind);
    }
  }

  async serviceGraph({ timeRange, expand, selector = "", topRoutes = 5 }) {
    const body = { time_range: timeRange, expand, selector, top_routes: topRoutes };
    // The first query may already be on its way (inline script in index.html); use it once if it matches.
    const pre = window.l7scopePrefetch;
    if (pre) {
      window.l7scopePrefetch = null;
      if (pre.body === JSON.stringify(body)) {
        const answer = await pre.answer;
        if (answer && typeof answer === "object") return answer;
      }
    }
    return this.call("graph", "/api/v1/servicegraph", body);
  }

  search({ timeRange, selector, pageSize, pageNum, sortBy }) {
    return this.call("search", "/api/v1/l7/logs/search", {
      time_range: timeRange, selector, page_size: pageSize, page_num: pageNum, sort_by: sortBy,
    });
  }

  /** Kept requests (docs/detail.md): { record: {drill fields} } or { request_id } or { trace_id }. */
  requests(kind, body) {
    return this.call(kind, "/api/v1/l7/requests", body);
  }

  aggregation(kind, { timeRange, selector, groupBy, limit = 100, orderBy = "count" }) {
    return this.call(kind, "/api/v1/l7/logs/aggregation", {
      time_range: timeRange, selector, group_by: groupBy, limit, order_by: orderBy,
    });
  }
}

export const isAbort = (e) => e?.name === "AbortError";
