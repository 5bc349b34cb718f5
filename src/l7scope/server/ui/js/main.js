// Entry point of the Service Graph page: page state (time range, expanded namespaces, selection,
// thresholds, auto-refresh, layout), the view in the URL (js/viewstate.js) and the wiring between
// the graph, the side panel and the HTTP tab.
// Sets the performance marks "l7scope:graph-drawn" and "l7scope:interactive" on first load.

import { Api, isAbort } from "./api.js";
import { $, fill, h } from "./dom.js";
import * as fmt from "./format.js";
import { Graph, LABELS_BY_DEFAULT_UP_TO, TYPE_NAME, TYPE_SHAPE } from "./graph.js";
import { COLORS, DEFAULT_THRESHOLDS, LABELS, loadThresholds, saveThresholds } from "./health.js";
import { HttpTab } from "./httptab.js";
import { initLogin } from "./login.js";
import { SidePanel } from "./sidepanel.js";
import { formatView, parseView } from "./viewstate.js";

const SHAPE_GLYPH = { "round-rectangle": "▭", "round-triangle": "▲", ellipse: "●", diamond: "◆", hexagon: "⬢" };

const state = {
  range: "15m",
  custom: null, // {from, to} epoch seconds when range = "custom"
  expanded: [], // namespaces shown as their services and workloads (the breadcrumb)
  expandedSet: false, // the URL or the user chose `expanded`; until then one namespace opens expanded
  layout: "force", // "force" (fcose) or "layered" (dagre, left to right)
  thresholds: loadThresholds(),
  answer: null,
  nodes: new Map(),
  edges: new Map(),
  seconds: 900,
  selection: null, // {kind, id}
  autoSelector: null, // the HTTP-tab filter the selection put there
  hiddenUnrelated: false,
  labelsTouched: false, // the user set the "Edge labels" box; until then large graphs start without
  timer: null,
};

const api = new Api();
let graph = null;

function timeRange() {
  if (state.range === "custom" && state.custom) return { from: state.custom.from, to: state.custom.to };
  return { from: `now-${state.range}`, to: "now" };
}

const nodeName = (id) => state.nodes.get(id)?.name || id;

const httpTab = new HttpTab(api, timeRange, (answer) => {
  fill($("http-count"), fmt.compact(answer.total_hits));
});

const side = new SidePanel(api,
  () => ({ timeRange: timeRange(), seconds: state.seconds, thresholds: state.thresholds, completeness: state.answer?.completeness }),
  (edgeId) => selectById(edgeId));

// --- graph data -------------------------------------------------------------------------------

async function loadGraph() {
  let answer;
  try {
    answer = await api.serviceGraph({ timeRange: timeRange(), expand: state.expanded });
  } catch (e) {
    if (isAbort(e)) return false;
    const box = $("load-error");
    box.hidden = false;
    fill(box, `Could not load the service graph: ${e.message}`);
    return false;
  }
  $("load-error").hidden = true;
  performance.mark("l7scope:graph-data");
  if (!state.expandedSet && !state.expanded.length) {
    // One namespace (the demo): a single box says nothing, so open it at once. The URL records
    // it, so Back does not return to the box.
    const namespaces = (answer.nodes || []).filter((n) => n.type === "namespace");
    const only = namespaces.length === 1 ? namespaces[0] : null;
    state.expandedSet = true;
    if (only && only.expandable !== false && !only.expanded) {
      state.expanded = [only.namespace || only.name];
      renderBreadcrumb();
      syncUrl(false);
      return loadGraph();
    }
  }
  state.answer = answer;
  state.nodes = new Map((answer.nodes || []).map((n) => [n.id, n]));
  state.edges = new Map((answer.edges || []).map((e) => [e.id, e]));
  state.seconds = Math.max(1, (answer.time_range?.to || 0) - (answer.time_range?.from || 0));
  renderCompleteness(answer.completeness, answer.truncated);
  fill($("range-label"), `${fmt.time(answer.time_range?.from)} → ${fmt.time(answer.time_range?.to)} · graph ${answer.took_ms ?? "?"} ms`);
  $("empty").hidden = state.nodes.size > 0 || !graph;
  if (graph) {
    if (!state.labelsTouched) $("labels-toggle").checked = (answer.edges || []).length <= LABELS_BY_DEFAULT_UP_TO;
    await graph.render(answer, state.expanded, state.thresholds, state.seconds, $("labels-toggle").checked);
    if ($("search").value) graph.search($("search").value);
    if (state.selection && !graph.select(state.selection.id)) clearSelection();
    if (state.hiddenUnrelated) {
      const sel = state.selection && graph.cy.getElementById(state.selection.id);
      if (sel && sel.nonempty()) graph.hideUnrelated(sel, false); else showAll();
    }
  }
  refreshSide();
  return true;
}

function renderCompleteness(c, truncated) {
  const box = $("completeness");
  if (!c) { fill(box); return; }
  box.classList.toggle("partial", c.requests_unlogged > 0);
  fill(box,
    h("b", {}, `${fmt.count(c.requests_logged)} of ${fmt.count(c.requests_seen)} requests logged`),
    ` (${fmt.pct(c.ratio)}) · ${fmt.count(c.requests_unlogged)} unlogged`,
    truncated ? " · graph truncated to the largest edges" : "");
  box.title = "Requests the node agents saw, and how many of them were written as detailed records. "
    + "Unlogged requests were dropped by the per-node limit (l7LogsFilePerNodeLimit) and are only counted.";
}

function refreshSide() {
  const sel = state.selection;
  if (!sel) return;
  if (sel.kind === "edge" && state.edges.has(sel.id)) side.showEdge(state.edges.get(sel.id), nodeName);
  else if (sel.kind === "node" && state.nodes.has(sel.id) && graph) side.showNode(state.nodes.get(sel.id), graph.edgesOf(sel.id), nodeName);
}

// --- selection --------------------------------------------------------------------------------

function onSelect(kind, raw) {
  if (!raw) return;
  state.selection = { kind, id: raw.id };
  $("hide-unrelated").disabled = false;
  refreshSide();
  state.autoSelector = raw.selector || "";
  httpTab.setSelector(state.autoSelector);
  syncUrl(true);
}

function selectById(id) {
  const ele = graph?.select(id);
  if (ele) onSelect(ele.isNode() ? "node" : "edge", ele.data("raw"));
}

function clearSelection() {
  graph?.unselect();
  state.selection = null;
  side.hide();
  $("hide-unrelated").disabled = true;
  if (state.autoSelector !== null && httpTab.selector === state.autoSelector) httpTab.setSelector("");
  state.autoSelector = null;
  syncUrl(true);
}

// --- the view in the URL (js/viewstate.js) ------------------------------------------------------

let restoring = false; // applying a URL: no new history entries

function currentView() {
  return {
    range: state.range, custom: state.custom, expanded: state.expandedSet ? state.expanded : null,
    selection: state.selection, layout: state.layout,
    // the selection's own filter follows from the selection; only a typed one is recorded
    filter: httpTab.selector && httpTab.selector !== state.autoSelector ? httpTab.selector : null,
  };
}

/** Write the view into the URL: a new history entry (push) or in place. */
function syncUrl(push) {
  const search = formatView(currentView());
  if (search === location.search) return;
  const url = location.pathname + search + location.hash;
  if (push && !restoring) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

/** Take range, expanded namespaces and layout from a parsed URL (before the graph loads). */
function applyView(view) {
  state.range = view.range || "15m";
  state.custom = view.range === "custom" ? view.custom : null;
  $("range").value = state.range;
  $("custom-range").hidden = state.range !== "custom";
  if (state.custom) { $("range-from").value = fmt.toLocalInput(state.custom.from); $("range-to").value = fmt.toLocalInput(state.custom.to); }
  state.expandedSet = view.expanded !== null;
  state.expanded = view.expanded || [];
  state.layout = view.layout || "force";
  $("layout").value = state.layout;
  renderBreadcrumb();
}

/** After the graph has loaded: select what the URL names, then put its filter in. */
function applySelection(view) {
  const ele = view.selection && graph?.select(view.selection.id);
  if (ele && (ele.isNode() ? "node" : "edge") === view.selection.kind) onSelect(view.selection.kind, ele.data("raw"));
  else if (state.selection) clearSelection();
  if (view.filter !== null && view.filter !== httpTab.selector) httpTab.setSelector(view.filter);
  else if (view.filter === null && !state.selection && httpTab.selector) httpTab.setSelector("");
}

/** Back / Forward: show the view of that history entry. */
async function onPopState() {
  const view = parseView(location.search);
  restoring = true;
  try {
    state.selection = null;
    state.autoSelector = null;
    graph?.unselect();
    side.hide();
    showAll();
    applyView(view);
    if (graph) graph.fitNext = true;
    if (graph) await graph.setLayout(state.layout);
    await loadGraph();
    applySelection(view);
    if (!view.selection && !view.filter) await httpTab.load();
  } finally {
    restoring = false;
  }
}

// --- navigation: expand / collapse / breadcrumb -------------------------------------------------

function setExpanded(list) {
  state.expanded = list;
  state.expandedSet = true;
  if (graph) graph.fitNext = true;
  clearSelection();
  showAll();
  renderBreadcrumb();
  loadGraph();
}

function renderBreadcrumb() {
  const parts = [];
  const crumb = (label, i, current) => (current
    ? h("span", { className: "current" }, label)
    : h("a", { onclick: () => setExpanded(state.expanded.slice(0, i)), title: "Back to this level" }, label));
  parts.push(crumb("Namespaces", 0, state.expanded.length === 0));
  state.expanded.forEach((ns, i) => {
    parts.push(h("span", { className: "sep" }, "›"));
    parts.push(crumb(ns, i + 1, i === state.expanded.length - 1));
  });
  fill($("breadcrumb"), parts);
}

function hideUnrelated(ele) {
  if (!graph || !ele) return;
  graph.hideUnrelated(ele);
  state.hiddenUnrelated = true;
  $("show-all").hidden = false;
}

function showAll() {
  if (graph && state.hiddenUnrelated) graph.showAll();
  state.hiddenUnrelated = false;
  $("show-all").hidden = true;
}

// --- controls ---------------------------------------------------------------------------------

function renderLegend() {
  const rows = [h("span", { className: "title" }, "Health (error rate / p99)")];
  for (const k of ["ok", "warn", "fail", "idle"]) {
    const th = state.thresholds;
    const rule = { ok: `< ${th.errWarnPct}% / < ${th.p99WarnMs} ms`, warn: `≥ ${th.errWarnPct}% or ≥ ${th.p99WarnMs} ms`, fail: `≥ ${th.errFailPct}% or ≥ ${th.p99FailMs} ms`, idle: "" }[k];
    rows.push(h("span", {}, h("span", { className: "sw", style: { background: COLORS[k] } }), LABELS[k]), h("span", { className: "muted" }, rule));
  }
  rows.push(h("span", { className: "title" }, "Nodes (size = requests)"));
  for (const [type, shape] of Object.entries(TYPE_SHAPE)) {
    rows.push(h("span", {}, h("span", { className: "shape" }, SHAPE_GLYPH[shape] || "●"), TYPE_NAME[type]), h("span", {}, ""));
  }
  rows.push(h("span", { className: "title" }, "Edges: rps · error % · p99 (width = requests)"));
  rows.push(h("span", {}, "— traffic"), h("span", {}, "- - service → workload"));
  fill($("legend"), rows);
}

function bindControls() {
  $("fit").addEventListener("click", () => graph?.fit());
  $("zoom-in").addEventListener("click", () => graph?.zoom(1.25));
  $("zoom-out").addEventListener("click", () => graph?.zoom(0.8));
  $("hide-unrelated").addEventListener("click", () => {
    const sel = state.selection && graph?.cy.getElementById(state.selection.id);
    if (sel && sel.nonempty()) hideUnrelated(sel);
  });
  $("show-all").addEventListener("click", showAll);
  $("labels-toggle").addEventListener("change", (e) => { state.labelsTouched = true; graph?.setLabels(e.target.checked); });
  $("side-close").addEventListener("click", clearSelection);
  $("refresh").addEventListener("click", refreshAll);
  $("layout").addEventListener("change", (e) => {
    state.layout = e.target.value;
    graph?.setLayout(state.layout);
    syncUrl(true);
  });
  // the HTTP tab's own handlers run first (bound in its constructor)
  $("filter-form").addEventListener("submit", () => syncUrl(false));
  $("filter-clear").addEventListener("click", () => syncUrl(false));
  window.addEventListener("popstate", onPopState);

  const search = $("search");
  search.addEventListener("input", () => graph?.search(search.value));
  search.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !graph) return;
    const matches = graph.search(search.value);
    graph.fit(matches);
    if (matches.length === 1) selectById(matches[0].id());
  });

  $("range").addEventListener("change", (e) => {
    const v = e.target.value;
    $("custom-range").hidden = v !== "custom";
    if (v === "custom") {
      const now = Math.floor(Date.now() / 1000);
      const c = state.custom || { from: now - 3600, to: now };
      $("range-from").value = fmt.toLocalInput(c.from);
      $("range-to").value = fmt.toLocalInput(c.to);
      return;
    }
    state.range = v;
    state.custom = null;
    if (graph) graph.fitNext = true;
    syncUrl(true);
    refreshAll();
  });
  $("range-apply").addEventListener("click", () => {
    const from = Math.floor(new Date($("range-from").value).getTime() / 1000);
    const to = Math.floor(new Date($("range-to").value).getTime() / 1000);
    if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
      const box = $("load-error");
      box.hidden = false;
      fill(box, "Custom range: pick a start before the end.");
      return;
    }
    state.range = "custom";
    state.custom = { from, to };
    if (graph) graph.fitNext = true;
    syncUrl(true);
    refreshAll();
  });
  $("autorefresh").addEventListener("change", setAutoRefresh);

  const inputs = { errWarnPct: "th-err-warn", errFailPct: "th-err-fail", p99WarnMs: "th-p99-warn", p99FailMs: "th-p99-fail" };
  const showThresholds = (th) => { for (const [k, id] of Object.entries(inputs)) $(id).value = th[k]; };
  $("settings-btn").addEventListener("click", () => { showThresholds(state.thresholds); $("settings").hidden = !$("settings").hidden; });
  const apply = (th) => {
    state.thresholds = saveThresholds(th);
    $("settings").hidden = true;
    renderLegend();
    if (state.answer && graph) graph.render(state.answer, state.expanded, state.thresholds, state.seconds, $("labels-toggle").checked);
    refreshSide();
  };
  $("th-save").addEventListener("click", () => apply(Object.fromEntries(Object.entries(inputs).map(([k, id]) => [k, $(id).value]))));
  $("th-reset").addEventListener("click", () => { showThresholds(DEFAULT_THRESHOLDS); apply({ ...DEFAULT_THRESHOLDS }); });
}

/** Popovers close on Escape or a click outside; Escape with none open clears the selection. */
function bindDismiss() {
  const popovers = [["settings", "settings-btn"], ["columns", "columns-btn"]];
  document.addEventListener("click", (e) => {
    for (const [id, button] of popovers) {
      if (!$(id).hidden && !$(id).contains(e.target) && !$(button).contains(e.target)) $(id).hidden = true;
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    const open = popovers.filter(([id]) => !$(id).hidden);
    if (open.length) open.forEach(([id]) => { $(id).hidden = true; });
    else if (state.selection && document.activeElement?.id !== "filter") clearSelection();
  });
}

function setAutoRefresh() {
  clearInterval(state.timer);
  const seconds = Number($("autorefresh").value);
  state.timer = seconds > 0 ? setInterval(() => { if (!document.hidden) refreshAll(); }, seconds * 1000) : null;
}

function refreshAll() {
  return Promise.all([loadGraph(), httpTab.load()]);
}

// --- start ------------------------------------------------------------------------------------

async function start() {
  performance.mark("l7scope:start");
  const view = parseView(location.search);
  applyView(view);
  renderLegend();
  initLogin();
  bindControls();
  bindDismiss();
  if (typeof window.cytoscape === "function") {
    graph = new Graph($("graph"), {
      onSelect, onUnselect: clearSelection,
      onExpand: (ns) => { if (!state.expanded.includes(ns)) setExpanded([...state.expanded, ns]); },
      onCollapse: (ns) => setExpanded(state.expanded.filter((x) => x !== ns)),
      onHideUnrelated: (ele) => {
        if (!ele.selected()) selectById(ele.id());
        hideUnrelated(ele);
      },
    });
  } else {
    $("vendor-missing").hidden = false;
  }
  if (graph) graph.layoutName = state.layout;
  await loadGraph();
  // cytoscape draws in its animation-frame callback, which runs before ours in the next frame;
  // a message posted from ours runs once that frame has been committed for display (the usual
  // "after next paint" measure; a second animation frame would also wait for the next frame)
  await new Promise((resolve) => requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = resolve;
    ch.port2.postMessage(null);
  }));
  performance.mark("l7scope:graph-drawn");
  setAutoRefresh();
  performance.mark("l7scope:interactive");
  window.l7scope.ready = true;
  document.documentElement.dataset.ready = "1";
  // after the graph, so the two do not compete for the first paint
  restoring = true;
  try {
    applySelection(view);
  } finally {
    restoring = false;
  }
  if (!state.selection && !view.filter) await httpTab.load();
  syncUrl(false);
}

// Handles for tests and for poking at the page from the console.
window.l7scope = { state, api, httpTab, get graph() { return graph; }, ready: false };
start();
