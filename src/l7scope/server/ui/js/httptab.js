// The HTTP tab: a selector filter box (errors shown inline at the server's position), sortable
// columns with a column chooser, paging ("showing a-b of N") and expandable rows with the full
// record and copy-as-JSON. Record values go into the table as text only.

import { ApiError, isAbort } from "./api.js";
import { $, fill, h } from "./dom.js";
import * as fmt from "./format.js";

const dash = (v) => (v === "" || v === null || v === undefined ? "-" : v);
const ep = (ns, name) => (ns && ns !== "-" ? `${ns}/${dash(name)}` : dash(name));

/** Columns: key, header, sort fields, text(record), numeric?, shown by default? */
export const COLUMNS = [
  { key: "start_time", label: "Start", sort: ["start_time"], text: (r) => fmt.time(r.start_time), def: true },
  { key: "end_time", label: "End", sort: ["end_time"], text: (r) => fmt.time(r.end_time), def: true },
  { key: "source", label: "Source", sort: ["src_namespace", "src_name_aggr"], text: (r) => ep(r.src_namespace, r.src_name_aggr), def: true },
  { key: "dest", label: "Destination", sort: ["dest_namespace", "dest_name_aggr"], text: (r) => ep(r.dest_namespace, r.dest_name_aggr), def: true },
  { key: "service", label: "Service", sort: ["dest_service_namespace", "dest_service_name"],
    text: (r) => (r.dest_service_name ? `${r.dest_service_namespace}/${r.dest_service_name}${r.dest_service_port ? ":" + r.dest_service_port : ""}` : "-"), def: true },
  { key: "method", label: "Method", sort: ["method"], text: (r) => dash(r.method), def: true },
  { key: "url", label: "URL", sort: ["url"], text: (r) => dash(r.url), def: true, mono: true },
  { key: "response_code", label: "Status", sort: ["response_code"], text: (r) => dash(r.response_code), def: true },
  { key: "count", label: "Count", sort: ["count"], text: (r) => fmt.count(r.count), num: true, def: true },
  { key: "duration_mean", label: "Mean", sort: ["duration_mean"], text: (r) => fmt.duration(r.duration_mean), num: true, def: true },
  { key: "duration_max", label: "Max", sort: ["duration_max"], text: (r) => fmt.duration(r.duration_max), num: true, def: true },
  { key: "duration_p99", label: "p99", sort: ["duration_p99"], text: (r) => (r.duration_p99 ? fmt.duration(r.duration_p99) : "–"), num: true, def: true },
  { key: "bytes_in", label: "Bytes in", sort: ["bytes_in"], text: (r) => fmt.bytes(r.bytes_in), num: true, def: true },
  { key: "bytes_out", label: "Bytes out", sort: ["bytes_out"], text: (r) => fmt.bytes(r.bytes_out), num: true, def: true },
  { key: "duration_p50", label: "p50", sort: ["duration_p50"], text: (r) => (r.duration_p50 ? fmt.duration(r.duration_p50) : "–"), num: true },
  { key: "duration_p90", label: "p90", sort: ["duration_p90"], text: (r) => (r.duration_p90 ? fmt.duration(r.duration_p90) : "–"), num: true },
  { key: "latency", label: "Proxy latency", sort: ["latency"], text: (r) => fmt.duration(r.latency), num: true },
  { key: "user_agent", label: "User agent", sort: ["user_agent"], text: (r) => dash(r.user_agent), mono: true },
  { key: "type", label: "Type", sort: ["type"], text: (r) => dash(r.type) },
  { key: "protocol", label: "Protocol", sort: ["protocol"], text: (r) => dash(r.protocol) },
  { key: "dest_port_num", label: "Dest port", sort: ["dest_port_num"], text: (r) => dash(r.dest_port_num), num: true },
  { key: "src_type", label: "Src type", sort: ["src_type"], text: (r) => dash(r.src_type) },
  { key: "dest_type", label: "Dest type", sort: ["dest_type"], text: (r) => dash(r.dest_type) },
  { key: "tls_sni", label: "TLS SNI", sort: ["tls_sni"], text: (r) => dash(r.tls_sni) },
  { key: "grpc_status", label: "gRPC status", sort: ["grpc_status"], text: (r) => dash(r.grpc_status) },
  { key: "host", label: "Node", sort: ["host"], text: (r) => dash(r.host) },
  { key: "collector_type", label: "Collector", sort: ["collector_type"], text: (r) => dash(r.collector_type) },
  { key: "requests_logged", label: "Logged / seen", sort: ["requests_logged"], text: (r) => `${fmt.count(r.requests_logged)} / ${fmt.count(r.requests_seen)}`, num: true },
];

const COLS_KEY = "l7scope.columns";

function codeClass(code) {
  const c = String(code || "")[0];
  return c >= "1" && c <= "5" ? `code-${c}xx` : "";
}

export class HttpTab {
  /** @param api Api; @param getTimeRange () => time_range for requests; @param onCounts (answer) => void */
  constructor(api, getTimeRange, onCounts) {
    this.api = api;
    this.getTimeRange = getTimeRange;
    this.onCounts = onCounts;
    this.selector = "";
    this.pageNum = 0;
    this.pageSize = Number($("page-size").value);
    this.sort = { key: "end_time", descending: true };
    this.visible = this.loadColumns();
    this.open = new Set(); // keys of expanded rows (kept across refreshes)
    this.requestsCache = new Map(); // row key -> answer of /api/v1/l7/requests (bounded)
    this.answer = null;
    this.bind();
    this.renderHead();
    this.renderColumnChooser();
  }

  loadColumns() {
    try {
      const saved = JSON.parse(localStorage.getItem(COLS_KEY) || "null");
      if (Array.isArray(saved)) {
        const keys = saved.filter((k) => COLUMNS.some((c) => c.key === k));
        if (keys.length) return new Set(keys);
      }
    } catch { /* fall back to defaults */ }
    return new Set(COLUMNS.filter((c) => c.def).map((c) => c.key));
  }

  bind() {
    $("filter-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.setSelector($("filter").value);
    });
    $("filter-clear").addEventListener("click", () => this.setSelector(""));
    $("prev").addEventListener("click", () => { if (this.pageNum > 0) { this.pageNum -= 1; this.load(); } });
    $("next").addEventListener("click", () => {
      if (this.answer && this.pageNum + 1 < this.answer.num_pages) { this.pageNum += 1; this.load(); }
    });
    $("page-size").addEventListener("change", () => { this.pageSize = Number($("page-size").value); this.pageNum = 0; this.load(); });
    $("columns-btn").addEventListener("click", () => { $("columns").hidden = !$("columns").hidden; });
    $("find-request-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.findRequest($("find-request").value);
    });
  }

  /** Search the kept requests (docs/detail.md) by request id, or by trace id (32 hex digits). */
  async findRequest(text) {
    const id = text.trim();
    const out = $("find-request-result");
    out.hidden = !id;
    if (!id) return;
    const body = /^[0-9a-fA-F]{32}$/.test(id) ? { trace_id: id } : { request_id: id };
    fill(out, h("div", { className: "muted" }, "Searching…"));
    try {
      const answer = await this.api.requests("find-request", { ...body, time_range: this.getTimeRange(), limit: 50 });
      fill(out, (answer.requests || []).length ? this.requestsTable(answer)
        : h("div", { className: "muted requests-empty" }, `No kept request with ${body.trace_id ? "trace id" : "request id"} ${id} in the time range.`));
    } catch (e) {
      if (isAbort(e)) return;
      fill(out, h("div", { className: "error" }, `Find: ${e instanceof ApiError ? e.message : String(e)}`));
    }
  }

  /** Set the filter (from the box or from a graph selection) and show its first page. */
  setSelector(selector) {
    this.selector = selector.trim();
    $("filter").value = this.selector;
    this.pageNum = 0;
    this.open.clear();
    return this.load();
  }

  sortBy() {
    const col = COLUMNS.find((c) => c.key === this.sort.key) || COLUMNS[1];
    return col.sort.map((field) => ({ field, descending: this.sort.descending }));
  }

  async load() {
    let answer;
    try {
      answer = await this.api.search({
        timeRange: this.getTimeRange(), selector: this.selector,
        pageSize: this.pageSize, pageNum: this.pageNum, sortBy: this.sortBy(),
      });
    } catch (e) {
      if (isAbort(e)) return;
      this.showError(e);
      return;
    }
    this.clearError();
    this.answer = answer;
    this.renderRows();
    this.onCounts(answer);
  }

  showError(e) {
    const box = $("filter-error");
    box.hidden = false;
    $("filter").classList.add("bad");
    const isSelector = e instanceof ApiError && e.position !== null;
    fill($("filter-error-caret"), isSelector ? `${this.selector}\n${" ".repeat(e.position)}^` : "");
    $("filter-error-caret").hidden = !isSelector;
    const what = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
    fill($("filter-error-msg"), what);
    if (isSelector) {
      const input = $("filter");
      input.focus();
      input.setSelectionRange(e.position, Math.min(e.position + 1, input.value.length));
    }
    fill($("http-body"));
    fill($("showing"), "no results (query failed)");
  }

  clearError() {
    $("filter-error").hidden = true;
    $("filter").classList.remove("bad");
  }

  renderHead() {
    const row = $("http-head");
    const cells = [h("th", { className: "chev", title: "Expand a row for the whole record" }, "")];
    for (const col of COLUMNS) {
      if (!this.visible.has(col.key)) continue;
      const sorted = this.sort.key === col.key;
      const arrow = sorted ? (this.sort.descending ? " ▼" : " ▲") : "";
      cells.push(h("th", {
        className: [col.num ? "num" : "", sorted ? "sorted" : ""].join(" ").trim(),
        dataset: { key: col.key }, title: `Sort by ${col.sort.join(", ")}`,
        onclick: () => this.toggleSort(col.key),
      }, col.label + arrow));
    }
    fill(row, cells);
  }

  toggleSort(key) {
    if (this.sort.key === key) this.sort.descending = !this.sort.descending;
    else this.sort = { key, descending: !["source", "dest", "service", "method", "url", "response_code"].includes(key) };
    this.pageNum = 0;
    this.renderHead();
    this.load();
  }

  renderColumnChooser() {
    const boxes = COLUMNS.map((col) => h("label", {},
      h("input", {
        type: "checkbox", checked: this.visible.has(col.key), dataset: { key: col.key },
        onchange: (e) => {
          if (e.target.checked) this.visible.add(col.key);
          else if (this.visible.size > 1) this.visible.delete(col.key);
          else e.target.checked = true;
          localStorage.setItem(COLS_KEY, JSON.stringify([...this.visible]));
          this.renderHead();
          this.renderRows();
        },
      }), " ", col.label));
    fill($("columns"), boxes);
  }

  rowKey(r, i) {
    return `${this.pageNum}:${i}:${r.start_time}:${r.end_time}:${r.url}:${r.response_code}`;
  }

  renderRows() {
    const a = this.answer;
    if (!a) return;
    const hits = a.hits || [];
    const first = hits.length ? a.page_num * a.page_size + 1 : 0;
    const last = hits.length ? first + hits.length - 1 : 0;
    fill($("showing"),
      h("span", { id: "showing-range" }, `Showing ${fmt.count(first)} - ${fmt.count(last)} of ${fmt.count(a.total_hits)} records`),
      h("span", { className: "muted" }, ` · ${fmt.count(a.total_requests)} requests · page ${a.num_pages ? a.page_num + 1 : 0} of ${fmt.count(a.num_pages)} · ${a.took_ms ?? "?"} ms`));
    $("prev").disabled = a.page_num <= 0;
    $("next").disabled = a.page_num + 1 >= a.num_pages;
    const empty = $("http-empty");
    empty.hidden = hits.length > 0;
    if (!hits.length) fill(empty, this.selector ? "No records match this filter in the time range." : "No HTTP records in the time range.");
    const cols = COLUMNS.filter((c) => this.visible.has(c.key));
    const rows = [];
    hits.forEach((r, i) => {
      const key = this.rowKey(r, i);
      const isOpen = this.open.has(key);
      const tr = h("tr", { className: "rec" + (isOpen ? " open" : ""), dataset: { index: String(i) } },
        h("td", { className: "chev", title: "Show the whole record" }, isOpen ? "▾" : "▸"),
        cols.map((c) => {
          const text = c.text(r);
          const cls = [c.num ? "num" : "", c.mono ? "mono" : "", c.key === "response_code" ? codeClass(r.response_code) : ""];
          return h("td", { className: cls.join(" ").trim(), title: text, dataset: { col: c.key } }, text);
        }));
      tr.addEventListener("click", () => {
        if (this.open.has(key)) this.open.delete(key); else this.open.add(key);
        this.renderRows();
      });
      rows.push(tr);
      if (isOpen) rows.push(this.detailRow(r, cols.length + 1, key));
    });
    fill($("http-body"), rows);
  }

  /** The record's kept requests (tail-based request detail, docs/detail.md), as DOM text only. */
  requestsSection(r, key) {
    const box = h("div", { className: "requests" }, h("div", { className: "muted" }, "Loading requests…"));
    if (!r.type || r.type === "unlogged" || r.type === "tcp" || r.type === "tls") {
      fill(box, h("div", { className: "muted" }, "No single requests for this record type."));
      return box;
    }
    const record = {};
    for (const f of DRILL_FIELDS) record[f] = f === "end_time" ? Number(r[f]) : String(r[f] ?? "");
    const show = (answer) => fill(box, this.requestsTable(answer));
    const cached = this.requestsCache.get(key);
    if (cached) { show(cached); return box; }
    this.api.requests(`requests:${key}`, { record, limit: 50 }).then((answer) => {
      if (this.requestsCache.size >= 100) this.requestsCache.clear();
      this.requestsCache.set(key, answer);
      show(answer);
    }).catch((e) => {
      if (isAbort(e)) return;
      fill(box, h("div", { className: "error" }, `Requests: ${e instanceof ApiError ? e.message : String(e)}`));
    });
    return box;
  }

  requestsTable(answer) {
    const reqs = Array.isArray(answer?.requests) ? answer.requests : [];
    if (!reqs.length) {
      return h("div", { className: "muted requests-empty" },
        "No requests kept for this record (kept: errors, slow and sampled requests, per the Service's l7scope.io/detail mode).");
    }
    const head = ["time", "reason", "rate", "method", "path", "status", "flags", "gRPC", "duration", "request id", "trace id", "headers"];
    const body = reqs.map((q) => {
      const headers = [...Object.entries(q.request_headers || {}).map(([k, v]) => `> ${k}: ${v}`),
        ...Object.entries(q.response_headers || {}).map(([k, v]) => `< ${k}: ${v}`)].join("\n");
      const cells = [q.time, q.reason, q.sample_rate > 1 ? `1/${q.sample_rate}` : "all", q.method, q.path,
        q.response_code, q.response_flags, q.grpc_status, fmt.duration(Number(q.duration_us) * 1000),
        q.request_id, q.trace_id ? `${q.trace_id} / ${q.span_id}` : "", headers];
      return h("tr", { className: "req", dataset: { requestId: String(q.request_id ?? "") } },
        cells.map((c, i) => h("td", { className: i >= 9 ? "mono" : "", title: String(c ?? "") }, String(c ?? ""))));
    });
    return h("div", {},
      h("div", { className: "requests-title" }, `Requests (${reqs.length}${answer.truncated ? "+" : ""} kept)`),
      h("table", { className: "requests-table" },
        h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, body)));
  }

  detailRow(r, span, key) {
    const fields = Object.keys(r).sort().map((k) => {
      let v = r[k];
      if (v !== null && typeof v === "object") v = JSON.stringify(v);
      let extra = "";
      if (/^duration_|^latency$/.test(k) && typeof r[k] === "number") extra = ` (${fmt.duration(r[k])})`;
      if (/_time$/.test(k) && typeof r[k] === "number") extra = ` (${fmt.time(r[k])})`;
      return h("div", { className: "f", dataset: { field: k } },
        h("span", { className: "k" }, k), h("span", { className: "v" }, String(v) + extra));
    });
    const status = h("span", { className: "muted copy-status" });
    const copy = h("button", {
      type: "button", className: "copy-json",
      onclick: async (e) => {
        e.stopPropagation();
        status.textContent = (await copyText(JSON.stringify(r, null, 2))) ? "copied" : "copy failed: select the JSON below";
      },
    }, "Copy as JSON");
    const json = h("pre", { className: "record-json", hidden: true }, JSON.stringify(r, null, 2));
    const toggle = h("button", { type: "button", onclick: (e) => { e.stopPropagation(); json.hidden = !json.hidden; } }, "Show JSON");
    const cell = h("td", { colSpan: span },
      h("div", { className: "detail-grid" }, fields),
      h("div", { className: "detail-actions" }, copy, toggle, status), json,
      this.requestsSection(r, key));
    return h("tr", { className: "detail", onclick: (e) => e.stopPropagation() }, cell);
  }
}

// The fields of a record its requests are matched on (contracts/detail.py DRILL_FIELDS).
const DRILL_FIELDS = ["end_time", "host", "src_name_aggr", "src_namespace", "dest_service_name",
  "dest_service_namespace", "url", "method", "response_code", "grpc_status"];

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API refused (e.g. plain http on another host): copy through a hidden textarea.
    const ta = h("textarea", { value: text, style: { position: "fixed", opacity: "0" } });
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}
