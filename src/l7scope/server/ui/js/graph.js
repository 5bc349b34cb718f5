// The Service Graph canvas: turns a /api/v1/servicegraph answer into cytoscape elements, draws
// them (health colours, traffic-scaled sizes, edge labels) and reports user actions through
// callbacks. Text on the canvas is drawn by cytoscape, never parsed as HTML.

import * as fmt from "./format.js";
import { COLORS, classify } from "./health.js";

const TYPE_FILL = {
  namespace: "#ece9ff", svc: "#e9e3ff", wep: "#f3f0ff", net: "#e3f0ff", hep: "#e3f0ff", group: "#fbfaff",
};
export const TYPE_SHAPE = {
  namespace: "round-rectangle", svc: "round-triangle", wep: "ellipse", net: "diamond", hep: "hexagon",
};
export const TYPE_NAME = {
  namespace: "namespace", svc: "service", wep: "workload", net: "network", hep: "host endpoint",
};
const BIG_GRAPH = 120; // nodes; above this the force-directed layout runs in a worker
const BIG_EDGES = 400; // edges; above this (or BIG_GRAPH nodes) edges are plain lines
export const LABELS_BY_DEFAULT_UP_TO = BIG_EDGES; // edge labels start off on larger graphs
const FCOSE = {
  quality: "default", nodeDimensionsIncludeLabels: false, nodeRepulsion: 12000,
  idealEdgeLength: 100, numIter: 1500, packComponents: true, tile: true,
};

// small graphs: room for the labels, shorter edges so the fit zoom keeps the text readable
const SMALL = { nodeDimensionsIncludeLabels: true, idealEdgeLength: 80, nodeRepulsion: 16000 };
// the layered layout: left to right by call depth (dagre, loaded on first use)
const DAGRE = { name: "dagre", rankDir: "LR", nodeSep: 24, rankSep: 90, edgeSep: 8, nodeDimensionsIncludeLabels: true };
export const LAYOUTS = ["force", "layered"];
// the layered layout's scripts (server/vendor.py LAYERED), in load order
const LAYERED_FILES = ["/vendor/dagre.js", "/vendor/cytoscape-dagre.js"];

// Labels: never drawn below MIN_LABEL_PX on screen (hidden instead: min-zoomed-font-size);
// when the zoom would draw them smaller, their font grows by one of FONT_STEPS so they stay
// legible down to zoom MIN_LABEL_PX / (NODE_FONT * max step).
export const MIN_LABEL_PX = 9;
const NODE_FONT = 12;
const TARGET_LABEL_PX = 10;
const FONT_STEPS = [1, 1.25, 1.5, 2, 2.5, 3];
// a fit never zooms in beyond this (one node would fill the canvas, its labels drawn huge)
const MAX_FIT_ZOOM = 1.5;

/** The font factor that draws a NODE_FONT label at >= TARGET_LABEL_PX at `zoom` (pure). */
export function fontStep(zoom) {
  return FONT_STEPS.find((f) => NODE_FONT * f * zoom >= TARGET_LABEL_PX) ?? FONT_STEPS[FONT_STEPS.length - 1];
}

let layeredLoad = null;
/** Load dagre and cytoscape-dagre once; resolves to whether the "dagre" layout is there. */
export function loadLayered() {
  if (typeof window.cytoscapeDagre !== "undefined") return Promise.resolve(true);
  layeredLoad = layeredLoad || LAYERED_FILES.reduce((prev, src) => prev.then(() => new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(s);
  })), Promise.resolve());
  return layeredLoad.then(() => typeof window.cytoscapeDagre !== "undefined", (e) => {
    console.warn("layered layout:", e.message);
    layeredLoad = null;
    return false;
  });
}

function runLayout(cy, opts) {
  const layout = cy.layout(opts);
  const done = new Promise((resolve) => layout.one("layoutstop", resolve));
  layout.run();
  return done;
}

function style(f = 1) {
  return [
    { selector: "node", style: {
      "shape": "ellipse", "background-color": "#eef",
      "border-width": 3, "border-color": "data(color)",
      "width": "data(size)", "height": "data(size)",
      "label": "data(label)", "font-size": NODE_FONT * f, "color": "#1d2430",
      "text-valign": "bottom", "text-margin-y": 4, "text-max-width": 160 * f, "text-wrap": "ellipsis",
      "min-zoomed-font-size": MIN_LABEL_PX,
    } },
    // per-type shape and fill as plain selectors (function-valued styles defeat style caching)
    ...Object.keys(TYPE_SHAPE).map((t) => ({ selector: `node[type = '${t}']`, style: { "shape": TYPE_SHAPE[t], "background-color": TYPE_FILL[t] } })),
    { selector: "node[type = 'namespace']", style: { "width": "data(wsize)", "font-weight": "bold", "text-valign": "center", "text-margin-y": 0 } },
    { selector: "node[type = 'net'], node[type = 'hep']", style: { "border-style": "dashed" } },
    { selector: ":parent", style: {
      "shape": "round-rectangle", "background-color": TYPE_FILL.group, "background-opacity": 0.6,
      "border-width": 1.5, "border-color": "#a59bf0", "border-style": "dashed",
      "label": "data(label)", "text-valign": "top", "text-halign": "center", "text-margin-y": -4,
      "font-weight": "bold", "font-size": 15 * f, "color": "#5b4ccf", "padding": 18,
    } },
    { selector: "edge", style: {
      "width": "data(width)", "line-color": "data(color)", "target-arrow-color": "data(color)",
      "target-arrow-shape": "triangle", "arrow-scale": 0.9, "curve-style": "bezier", "opacity": 0.85,
    } },
    // Label properties only on labelled edges: every property set costs a style pass (and bounds
    // bookkeeping) per element, which on 1,000 unlabelled edges is most of the first paint.
    { selector: "edge.labelled", style: {
      "label": "data(label)", "font-size": 9 * f, "color": "#334", "text-rotation": "autorotate",
      "text-background-color": "#ffffff", "text-background-opacity": 0.85, "text-background-padding": 1,
      "min-zoomed-font-size": 8,
    } },
    // a self-loop (traffic inside one collapsed namespace): a small loop above the node, its
    // label level beside it (autorotate would turn it along the loop, across the node)
    { selector: "edge:loop", style: {
      "loop-direction": "-45deg", "loop-sweep": "-70deg", "control-point-step-size": 56,
      "text-rotation": "none", "text-halign": "left", "text-margin-x": -4,
    } },
    { selector: "edge[kind = 'backend']", style: { "line-style": "dashed", "opacity": 0.6 } },
    // Large graphs: plain lines (no arrowhead maths per edge); the edges of the selection get
    // their arrowheads back (class "focus"), so direction is one click away.
    { selector: "edge.fast", style: { "curve-style": "haystack", "haystack-radius": 0, "target-arrow-shape": "none" } },
    { selector: "edge.fast.focus", style: { "curve-style": "straight", "target-arrow-shape": "triangle", "arrow-scale": 0.8 } },
    { selector: "node:selected", style: { "border-color": "#5b4ccf", "border-width": 5, "overlay-opacity": 0.08, "overlay-color": "#5b4ccf" } },
    { selector: "edge:selected", style: { "line-color": "#5b4ccf", "target-arrow-color": "#5b4ccf", "opacity": 1, "z-index": 10 } },
    { selector: ".faded", style: { "opacity": 0.12 } },
    { selector: ".match", style: { "border-color": "#5b4ccf", "border-width": 5 } },
    { selector: ".hidden", style: { "display": "none" } },
  ];
}

/** Scale 0..max to lo..hi on a log curve, so one busy edge does not flatten the rest. */
function scale(value, max, lo, hi) {
  if (!max || !value) return lo;
  return lo + (hi - lo) * (Math.log1p(value) / Math.log1p(max));
}

/** Cytoscape element definitions for one servicegraph answer (pure; exported for tests). */
export function toElements(answer, expanded, thresholds, seconds, showLabels = true) {
  const nodes = answer.nodes || [];
  const edges = answer.edges || [];
  const ids = new Set(nodes.map((n) => n.id));
  const maxNode = Math.max(0, ...nodes.map((n) => n.stats?.count || 0));
  const maxEdge = Math.max(0, ...edges.map((e) => e.totals?.count || 0));
  const els = [];
  const groups = new Set();
  // Large graphs draw plain-line edges; labels follow the "Edge labels" box.
  const edgeClasses = [nodes.length > BIG_GRAPH || edges.length > BIG_EDGES ? "fast" : "", showLabels ? "labelled" : ""].join(" ").trim();
  // Inner nodes of an expanded namespace sit in a box named after it (a compound node), unless
  // the server already sends that namespace as an expanded parent node.
  const parentOf = (n) => {
    if (n.parent_id && ids.has(n.parent_id)) return n.parent_id;
    if ((n.type === "svc" || n.type === "wep") && expanded.includes(n.namespace)) {
      groups.add(n.namespace);
      return `group/${n.namespace}`;
    }
    return undefined;
  };
  for (const n of nodes) {
    const st = n.stats || {};
    const errRatio = st.count ? (st.errors || 0) / st.count : 0;
    const health = classify(st.count || 0, errRatio, null, thresholds);
    const size = scale(st.count || 0, maxNode, 26, 64);
    els.push({ group: "nodes", data: {
      id: n.id, label: n.name || n.id, type: n.type, namespace: n.namespace, parent: parentOf(n),
      size, wsize: size * 1.5, color: COLORS[health], health, count: st.count || 0, raw: n,
    } });
  }
  for (const ns of groups) {
    els.push({ group: "nodes", data: { id: `group/${ns}`, label: ns, type: "group", namespace: ns, size: 30, color: "#a59bf0", raw: null } });
  }
  for (const e of edges) {
    if (!ids.has(e.source) || !ids.has(e.target)) continue;
    const t = e.totals || {};
    const errRatio = t.error_rate ?? (t.count ? (t.errors || 0) / t.count : 0);
    const health = classify(t.count || 0, errRatio, t.p99 ?? null, thresholds);
    const label = edgeLabel(t, errRatio, seconds);
    els.push({ group: "edges", classes: edgeClasses, data: {
      id: e.id, source: e.source, target: e.target, kind: e.kind || "traffic",
      width: scale(t.count || 0, maxEdge, 1, 8), color: COLORS[health], health, label, count: t.count || 0, raw: e,
    } });
  }
  return els;
}

/**
 * Grid positions for the leaf nodes among `nodeEls` (element definitions; sets their
 * `position`), busiest first, row by row, in cells of 100 px and about the aspect ratio of a
 * `width` x `height` box. Pure apart from that; exported for tests.
 */
export function gridPositions(nodeEls, width, height) {
  const parents = new Set(nodeEls.map((e) => e.data.parent).filter(Boolean));
  const leaves = nodeEls.filter((e) => !parents.has(e.data.id))
    .sort((a, b) => (b.data.count || 0) - (a.data.count || 0));
  const cols = Math.max(1, Math.round(Math.sqrt(leaves.length * (width || 4) / (height || 3))));
  leaves.forEach((e, i) => { e.position = { x: (i % cols) * 100, y: Math.floor(i / cols) * 100 }; });
}

export function edgeLabel(totals, errRatio, seconds) {
  const parts = [fmt.rate(seconds > 0 ? (totals.count || 0) / seconds : 0), fmt.pct(errRatio)];
  if (totals.p99 !== null && totals.p99 !== undefined) parts.push("p99 " + fmt.duration(totals.p99));
  return parts.join(" · ");
}

export class Graph {
  /**
   * @param container element to draw into
   * @param handlers {onSelect(kind, raw, ele), onUnselect(), onExpand(ns), onCollapse(ns), onHideUnrelated(ele)}
   */
  constructor(container, handlers) {
    this.handlers = handlers;
    this.cy = window.cytoscape({
      container, style: style(), elements: [],
      minZoom: 0.05, maxZoom: 4, boxSelectionEnabled: false,
      selectionType: "single", textureOnViewport: false, hideEdgesOnViewport: false,
    });
    this.signature = "";
    this.layoutName = "force";
    this.fitNext = true; // the next new set of elements is fitted (the page sets it on navigation)
    this.fontStep = 1;
    this.bind();
    // The canvas follows its box (side panel opening, window resize).
    new ResizeObserver(() => this.cy.resize()).observe(container);
  }

  bind() {
    const cy = this.cy;
    cy.on("tap", "node, edge", (evt) => {
      const ele = evt.target;
      if (ele.isNode() && ele.data("type") === "group") return;
      this.handlers.onSelect(ele.isNode() ? "node" : "edge", ele.data("raw"), ele);
    });
    cy.on("tap", (evt) => { if (evt.target === cy) this.handlers.onUnselect(); });
    cy.on("dbltap", "node", (evt) => {
      const d = evt.target.data();
      if (d.type === "group" || (d.type === "namespace" && d.raw?.expanded)) this.handlers.onCollapse(d.namespace);
      else if (d.type === "namespace" && d.raw?.expandable !== false) this.handlers.onExpand(d.namespace || d.label);
    });
    cy.on("cxttap", "node, edge", (evt) => this.handlers.onHideUnrelated(evt.target));
    // arrowheads for the selection's edges (they are off on large graphs, see style())
    const focus = (ele) => (ele.isNode() ? ele.connectedEdges() : ele);
    cy.on("select", "node, edge", (evt) => focus(evt.target).addClass("focus"));
    cy.on("unselect", "node, edge", (evt) => focus(evt.target).removeClass("focus"));
    // labels keep a legible size as the zoom changes (small graphs; see fontStep)
    cy.on("zoom", () => {
      if (this.fontFrame) return;
      this.fontFrame = requestAnimationFrame(() => { this.fontFrame = null; this.applyFontStep(); });
    });
  }

  /** Restyle the labels for the current zoom if it needs another font step. */
  applyFontStep() {
    const cy = this.cy;
    const f = cy.nodes().length > BIG_GRAPH ? 1 : fontStep(cy.zoom());
    if (f === this.fontStep) return;
    this.fontStep = f;
    cy.style().fromJson(style(f)).update();
  }

  /** Draw an answer. Keeps positions when the same nodes come back (auto-refresh). */
  async render(answer, expanded, thresholds, seconds, showLabels) {
    const cy = this.cy;
    const els = toElements(answer, expanded, thresholds, seconds, showLabels);
    const signature = els.map((e) => e.data.id).sort().join("\n");
    if (signature === this.signature && cy.elements().length) {
      // same elements: update their numbers and colours, keep positions and view state classes
      cy.batch(() => { for (const el of els) cy.getElementById(el.data.id).data(el.data); });
      this.setLabels(showLabels);
      this.fitNext = false;
      return;
    }
    const old = new Map(cy.nodes().map((n) => [n.id(), { ...n.position() }]));
    this.signature = signature;
    const selected = cy.$(":selected").map((e) => e.id());
    const nodeEls = els.filter((e) => e.group === "nodes");
    const knownCount = nodeEls.filter((e) => old.has(e.data.id)).length;
    const incremental = knownCount > 0 && knownCount >= nodeEls.length * 0.6;
    // a new large graph arrives already placed on a grid (no layout run, no position events)
    if (!incremental && nodeEls.length > BIG_GRAPH) gridPositions(nodeEls, cy.width(), cy.height());
    cy.batch(() => {
      cy.elements().remove();
      cy.add(els);
      for (const id of selected) cy.getElementById(id).select();
    });
    if (incremental) {  // keep the known nodes where they were
      cy.nodes().filter((n) => old.has(n.id())).forEach((n) => n.position(old.get(n.id())).scratch("_placed", true));
    }
    await this.layout(incremental);
    cy.nodes().scratch("_placed", true);
    // fitted after a navigation (expand, collapse, range, Back; see fitNext) or when most nodes
    // are new, but not when a refresh adds a node to a view the user zoomed; large graphs fit
    // themselves
    if (cy.nodes().length <= BIG_GRAPH && (this.fitNext || !incremental)) this.fit();
    this.fitNext = false;
  }

  /**
   * "force" (fcose) or "layered" (dagre, left to right); lays the graph out again and fits.
   * Graphs above BIG_GRAPH nodes stay force-directed whatever is chosen (see layeredApplies).
   */
  /** Whether the layered layout is used for the graph on the canvas (not above BIG_GRAPH nodes). */
  layeredApplies() { return this.cy.nodes().length <= BIG_GRAPH; }

  async setLayout(name) {
    if (!LAYOUTS.includes(name) || name === this.layoutName) return;
    this.layoutName = name;
    if (!this.cy.nodes().length) return;
    await this.layout(false);
    if (this.cy.nodes().length <= BIG_GRAPH) this.fit();
  }

  async layout(incremental) {
    const cy = this.cy;
    if (cy.nodes().length > BIG_GRAPH) return incremental ? this.placeNewNodes() : this.bigLayout();
    // a small graph: a worker still busy with an earlier large one must not move it, and the
    // texture caches that graph switched off come back
    const seq = (this.seq = (this.seq || 0) + 1);
    this.cachesOn();
    if (!cy.nodes().length) return undefined;
    if (this.layoutName === "layered" && await loadLayered()) {
      if (seq !== this.seq) return undefined; // a newer graph arrived while dagre loaded
      return runLayout(cy, { ...DAGRE, animate: false, fit: false });
    }
    // fcose registers itself when its script loads; without it fall back to the built-in cose.
    const opts = typeof window.cytoscapeFcose === "function"
      ? { ...FCOSE, ...SMALL, name: "fcose", animate: false, randomize: !incremental, fit: false }
      : { name: "cose", animate: false, fit: false };
    return runLayout(cy, opts);
  }

  /**
   * Large graphs: an instant grid ordered by traffic (busiest first, set by `render` through
   * gridPositions) so the page is usable at once, then the force-directed layout computed in a
   * worker replaces it.
   */
  bigLayout() {
    const cy = this.cy;
    // Fit to the nodes only: straight edges between grid cells stay inside their box, and the
    // edges' bounds (a style pass and projections for 1,000 edges) are left to the first draw.
    cy.fit(cy.nodes(), 30);
    // Draw the grid without the texture caches; they come back with the refined layout.
    this.cachesOff();
    // start the worker once the grid is on screen, so it does not compete with the first paint
    requestAnimationFrame(() => setTimeout(() => this.refineInWorker(), 0));
    return Promise.resolve();
  }

  /**
   * Cytoscape draws nodes and labels through per-element texture caches. They make later frames
   * (pan, zoom) about twice as cheap, but filling them makes the first frame of a large graph
   * much dearer on a software-rendered canvas (40 % more main-thread time for 200 nodes and
   * 1,000 edges). So a new large graph is first drawn directly and the caches are filled by
   * the redraw that applies the worker's layout. Uses renderer internals of the pinned
   * cytoscape version (ui/package.json); does nothing if they are not there.
   */
  cachesOff() {
    if (this.cachesBypassed) return;
    const data = this.cy.renderer()?.data || {};
    const caches = ["eleTxrCache", "lblTxrCache", "slbTxrCache", "tlbTxrCache"].map((k) => data[k]);
    const layers = data.lyrTxrCache;
    if (!caches.every((c) => c && typeof c.getElement === "function") || typeof layers?.getLayers !== "function") return;
    for (const c of caches) c.getElement = () => null; // direct draw instead of a texture
    layers.getLayers = () => null; // no layer textures either
    this.cachesBypassed = [...caches, layers];
  }

  /** Put the texture caches back (the own properties set by cachesOff shadow the methods). */
  cachesOn() {
    for (const c of this.cachesBypassed || []) { delete c.getElement; delete c.getLayers; }
    this.cachesBypassed = null;
  }

  /** Large graph, mostly known nodes: put new ones next to their neighbours, then refine. */
  placeNewNodes() {
    const cy = this.cy;
    const fresh = cy.nodes().filter((n) => !n.isParent() && n.scratch("_placed") !== true);
    fresh.forEach((n) => {
      const known = n.neighborhood("node").filter((m) => m.scratch("_placed") === true);
      const c = known.length ? known.boundingBox() : cy.nodes().boundingBox();
      n.position({ x: (c.x1 + c.x2) / 2 + (Math.random() - 0.5) * 60, y: (c.y1 + c.y2) / 2 + (Math.random() - 0.5) * 60 });
    });
    cy.nodes().scratch("_placed", true);
    this.refineInWorker(false);
    return Promise.resolve();
  }

  refineInWorker(randomize = true) {
    if (typeof Worker !== "function") { this.cachesOn(); return; }
    this.worker = this.worker || new Worker("js/layout-worker.js");
    const seq = (this.seq = (this.seq || 0) + 1);
    const cy = this.cy;
    this.worker.onmessage = (event) => {
      const { seq: got, positions, error } = event.data;
      if (got !== this.seq) return; // a newer graph replaced this one
      this.cachesOn(); // the redraw below fills them
      if (error) { console.warn("layout worker:", error); cy.forceRender(); return; }
      cy.batch(() => cy.nodes().forEach((n) => { if (!n.isParent() && positions[n.id()]) n.position(positions[n.id()]); }));
      if (!cy.$(":selected").length) cy.fit(undefined, 40);
      this.refined = seq;
      cy.emit("l7scope-layout-refined");
    };
    this.worker.postMessage({
      seq,
      nodes: cy.nodes().map((n) => ({ id: n.id(), parent: n.data("parent"), w: n.width(), h: n.height(), ...n.position() })),
      edges: cy.edges().map((e) => ({ id: e.id(), source: e.data("source"), target: e.data("target") })),
      // always fcose: dagre took 50 s for 200 nodes and 1,000 edges (the layered layout is for
      // graphs up to BIG_GRAPH nodes)
      options: { ...FCOSE, randomize },
    });
  }

  setLabels(show) {
    this.cy.edges().toggleClass("labelled", show);
  }

  select(id) {
    const ele = this.cy.getElementById(id);
    if (!ele.nonempty()) return null;
    this.cy.$(":selected").unselect();
    ele.select();
    return ele;
  }

  unselect() { this.cy.$(":selected").unselect(); }

  /** Show only `ele` and its direct neighbours (plus their namespace boxes). */
  hideUnrelated(ele, fit = true) {
    const cy = this.cy;
    let keep = ele.isNode() ? ele.closedNeighborhood() : ele.union(ele.connectedNodes());
    if (ele.isNode() && ele.isParent()) keep = keep.union(ele.descendants()).union(ele.descendants().closedNeighborhood());
    keep = keep.union(keep.parents());
    cy.batch(() => {
      cy.elements().removeClass("hidden");
      cy.elements().not(keep).addClass("hidden");
    });
    if (fit) cy.fit(keep, 50);
  }

  showAll() {
    this.cy.elements().removeClass("hidden");
    this.cy.fit(undefined, 40);
  }

  /** Highlight nodes whose name or id contains `text`; returns the matches. */
  search(text) {
    const cy = this.cy;
    const q = text.trim().toLowerCase();
    cy.batch(() => cy.elements().removeClass("faded match"));
    if (!q) return cy.collection();
    const matches = cy.nodes().filter((n) => n.data("type") !== "group"
      && (String(n.data("label")).toLowerCase().includes(q) || n.id().toLowerCase().includes(q)));
    const keep = matches.union(matches.parents()).union(matches.edgesWith(matches));
    cy.batch(() => {
      cy.elements().not(keep).addClass("faded");
      matches.addClass("match");
    });
    return matches;
  }

  /** Fit `eles` (default: everything), never zooming in beyond MAX_FIT_ZOOM; no animation. */
  fit(eles) {
    const cy = this.cy;
    const target = eles && eles.nonempty() ? eles : cy.elements(":visible");
    cy.fit(target, 40);
    if (cy.zoom() > MAX_FIT_ZOOM) {
      cy.zoom(MAX_FIT_ZOOM);
      cy.center(target);
    }
    this.applyFontStep();
  }

  zoom(factor) {
    const cy = this.cy;
    cy.zoom({ level: cy.zoom() * factor, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } });
  }

  /** Edges touching a node, for the side panel. */
  edgesOf(id) {
    const n = this.cy.getElementById(id);
    return { incoming: n.incomers("edge"), outgoing: n.outgoers("edge") };
  }
}
