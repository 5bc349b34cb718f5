// Force-directed layout (fcose) for large graphs, off the main thread, so the page is usable
// while it runs. Input: {seq, nodes: [{id, parent, w, h, x, y}], edges: [{id, source, target}],
// options}; output: {seq, positions: {id: {x, y}}} or {seq, error}.
/* global cytoscape */
importScripts("/vendor/bundle.js"); // cytoscape and fcose (server/vendor.py)

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
    cy.layout({ ...options, name: "fcose", animate: false, fit: false }).run();
    const positions = {};
    cy.nodes().forEach((n) => { if (!n.isParent()) positions[n.id()] = n.position(); });
    self.postMessage({ seq, positions });
  } catch (e) {
    self.postMessage({ seq, error: String(e) });
  }
};
