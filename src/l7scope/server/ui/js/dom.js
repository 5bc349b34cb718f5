// Safe DOM building. Every piece of data (URLs, user agents, names) reaches the page only as a
// text node or through a property setter; nothing in this app assigns HTML strings.

/**
 * h("td", {className: "num", title: t, onclick: fn}, "text", childNode, ...)
 * Props are assigned as DOM properties (never as HTML); `dataset` and `style` take objects.
 * Children: strings/numbers become text nodes; null/undefined/false are skipped.
 */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "style") Object.assign(node.style, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "innerHTML" || key === "outerHTML") throw new Error("h(): HTML strings are not allowed");
      else node[key] = value;
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of `node` with `children` (same rules as h()). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (id) => document.getElementById(id);
