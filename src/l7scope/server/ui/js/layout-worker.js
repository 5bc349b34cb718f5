// Force-directed (fcose) or layered (dagre) layout for large graphs, off the main thread, so the page is usable
// while it runs. Input: {seq, nodes: [{id, parent, w, h, x, y}], edges: [{id, source, target}],
// options}; output: {seq, positions: {id: {x, y}}} or {seq, error}.
/* global cytoscape */
importScripts("/vendor/bundle.js"); // cytoscape and fcose (server/vendor.py)
// the layered layout (dagre), loaded on its first use
const LAYERED = ["/vendor/dagre.js", "/vendor/cytoscape-dagre.js"];

self.onmessage = (event) => {
  const { seq, nodes, edges, options } = event.data;
  try {
    const cy = cytoscape({
      headless: true,
      styleEnabled: true,
      style: [{ selector: "node", style: { width: "data(w)", height: "data(h)" } }],
      elements: {
        nodes: nodes.map((n) => ({ data: { id: n.id, parent: n.parent, w: n.w, h: n.h }, position: { x: n.x, y: n.y } })),
        edges: edges.map((e) => ({ data: e })),
      },
    });
    if (options.name === "dagre" && typeof self.cytoscapeDagre === "undefined") importScripts(...LAYERED);
    cy.layout({ name: "fcose", ...options, animate: false, fit: false }).run();
    const positions = {};
    cy.nodes().forEach((n) => { if (!n.isParent()) positions[n.id()] = n.position(); });
    self.postMessage({ seq, positions });
  } catch (e) {
    self.postMessage({ seq, error: String(e) });
  }
};
