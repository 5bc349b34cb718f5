// Side panel for the selected node or edge: totals, per status class stats, top routes (error
// rate and latency) and completeness. Edges use the stats in the servicegraph answer; nodes ask
// the aggregation endpoint with the node's selector.

import { isAbort } from "./api.js";
import { $, fill, h } from "./dom.js";
import * as fmt from "./format.js";
import { COLORS, LABELS, classify } from "./health.js";
import { TYPE_NAME } from "./graph.js";

const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "no_response"];

function kv(pairs) {
  return h("dl", { className: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function healthBadge(health) {
  return h("span", {}, h("span", { className: "health-dot", style: { background: COLORS[health] } }), LABELS[health]);
}

/** A small table; a cell is text or a ready <td>. */
function table(head, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => (c instanceof Node ? c : h("td", {}, c)))))));
}

function completenessNote(c) {
  if (!c) return null;
  const text = `${fmt.count(c.requests_logged)} of ${fmt.count(c.requests_seen)} requests logged`
    + ` (${fmt.pct(c.ratio)}) · ${fmt.count(c.requests_unlogged)} unlogged in this time range`;
  return h("p", { className: "muted completeness-note" }, text,
    c.requests_unlogged ? " — numbers here cover logged requests only (per-node limit)." : "");
}

function classRows(stats, total) {
  return CLASSES.filter((k) => stats[k]).map((k) => {
    const s = stats[k];
    return [k, fmt.count(s.count), fmt.pct(total ? s.count / total : 0), fmt.duration(s.mean_duration),
      fmt.duration(s.max_duration), fmt.duration(s.p99 ?? null)];
  });
}

function routeRows(routes) {
  return routes.map((r) => [
    h("td", { className: "url" }, `${r.method || "-"} ${r.url || "-"}`),
    fmt.count(r.count), fmt.pct(r.error_rate), fmt.duration(r.p99 ?? null),
  ]);
}

export class SidePanel {
  /** @param api Api; @param ctx () => {timeRange, seconds, thresholds, completeness}; @param onPickEdge (id) => void */
  constructor(api, ctx, onPickEdge) {
    this.api = api;
    this.ctx = ctx;
    this.onPickEdge = onPickEdge;
    this.current = null;
  }

  hide() {
    this.current = null;
    $("side").hidden = true;
  }

  showEdge(edge, nodeName) {
    this.current = { kind: "edge", id: edge.id };
    const { seconds, thresholds, completeness } = this.ctx();
    const t = edge.totals || {};
    const errRatio = t.error_rate ?? (t.count ? (t.errors || 0) / t.count : 0);
    const health = classify(t.count || 0, errRatio, t.p99 ?? null, thresholds);
    $("side").hidden = false;
    fill($("side-title"), `${nodeName(edge.source)} → ${nodeName(edge.target)}`);
    fill($("side-body"),
      h("p", { className: "muted" }, edge.kind === "backend" ? "service → workloads that answered it" : "HTTP traffic"),
      kv([
        ["health", healthBadge(health)],
        ["requests", `${fmt.count(t.count)} (${fmt.rate(seconds > 0 ? (t.count || 0) / seconds : 0)})`],
        ["errors", `${fmt.count(t.errors)} (${fmt.pct(errRatio)})`],
        ["p50 / p99", `${fmt.duration(t.p50 ?? null)} / ${fmt.duration(t.p99 ?? null)}`],
        ["mean / max", `${fmt.duration(t.mean_duration ?? null)} / ${fmt.duration(t.max_duration ?? null)}`],
        ["bytes in / out", `${fmt.bytes(t.bytes_in)} / ${fmt.bytes(t.bytes_out)}`],
      ]),
      completenessNote(completeness),
      h("h3", {}, "By status class"),
      table(["class", "requests", "share", "mean", "max", "p99"], classRows(edge.stats || {}, t.count || 0)),
      h("h3", {}, "Top routes"),
      (edge.top_routes || []).length
        ? table(["route", "requests", "errors", "p99"], routeRows(edge.top_routes))
        : h("p", { className: "muted" }, "no routes"),
      h("p", { className: "muted" }, "The HTTP tab below is filtered to this edge."));
  }

  async showNode(node, edges, nodeName) {
    this.current = { kind: "node", id: node.id };
    const { seconds, thresholds, completeness, timeRange } = this.ctx();
    const st = node.stats || {};
    const errRatio = st.count ? (st.errors || 0) / st.count : 0;
    const health = classify(st.count || 0, errRatio, null, thresholds);
    const classesBox = h("div", {}, h("p", { className: "muted" }, "loading…"));
    const routesBox = h("div", {}, h("p", { className: "muted" }, "loading…"));
    const edgeList = (list, other) => (list.length
      ? table(["peer", "requests", "errors", "p99"], list.sort((a, b) => b.data("count") - a.data("count")).slice(0, 8).map((e) => {
        const t = e.data("raw").totals || {};
        return [h("td", { className: "linkish", onclick: () => this.onPickEdge(e.id()) }, nodeName(e.data(other))),
          fmt.count(t.count), fmt.pct(t.error_rate ?? 0), fmt.duration(t.p99 ?? null)];
      }))
      : h("p", { className: "muted" }, "none"));
    $("side").hidden = false;
    fill($("side-title"), node.name || node.id);
    fill($("side-body"),
      h("p", { className: "muted" }, `${TYPE_NAME[node.type] || node.type}${node.namespace && node.type !== "namespace" ? ` in ${node.namespace}` : ""}`
        + (node.type === "namespace" ? " · double-click to expand" : "")),
      kv([
        ["health", healthBadge(health)],
        ["requests", `${fmt.count(st.count)} (${fmt.rate(seconds > 0 ? (st.count || 0) / seconds : 0)})`],
        ["errors", `${fmt.count(st.errors)} (${fmt.pct(errRatio)})`],
        ["bytes in / out", `${fmt.bytes(st.bytes_in)} / ${fmt.bytes(st.bytes_out)}`],
      ]),
      completenessNote(completeness),
      h("h3", {}, "By status class"), classesBox,
      h("h3", {}, "Top routes"), routesBox,
      h("h3", {}, "Inbound"), edgeList(edges.incoming.toArray(), "source"),
      h("h3", {}, "Outbound"), edgeList(edges.outgoing.toArray(), "target"));
    await this.loadNodeStats(node, timeRange, classesBox, routesBox);
  }

  async loadNodeStats(node, timeRange, classesBox, routesBox) {
    const selector = node.selector || "";
    try {
      const [classes, routes] = await Promise.all([
        this.api.aggregation("side-classes", { timeRange, selector, groupBy: ["response_class"], limit: 10 }),
        this.api.aggregation("side-routes", { timeRange, selector, groupBy: ["method", "url"], limit: 5 }),
      ]);
      if (this.current?.id !== node.id) return;
      const total = classes.groups.reduce((s, g) => s + g.count, 0);
      const order = (g) => CLASSES.indexOf(g.key.response_class);
      fill(classesBox, table(["class", "requests", "share", "mean", "max", "p99"],
        classes.groups.sort((a, b) => order(a) - order(b)).map((g) => [g.key.response_class, fmt.count(g.count),
          fmt.pct(total ? g.count / total : 0), fmt.duration(g.duration_mean), fmt.duration(g.duration_max),
          fmt.duration(g.p99 ?? null)])));
      fill(routesBox, routes.groups.length
        ? table(["route", "requests", "errors", "p99"], routeRows(routes.groups.map((g) => ({ ...g, method: g.key.method, url: g.key.url }))))
        : h("p", { className: "muted" }, "no routes"));
    } catch (e) {
      if (isAbort(e) || this.current?.id !== node.id) return;
      fill(classesBox, h("p", { className: "error" }, `could not load: ${e.message}`));
      fill(routesBox);
    }
  }
}
