// The page's view in the URL: time range, expanded namespaces, selection, HTTP-tab filter and
// layout, as query parameters, so a view can be shared, bookmarked and walked with Back/Forward.
// The URL is input from anyone who sends a link: every value is checked here, and the page only
// ever uses them as text (never as HTML or as a cytoscape selector).

export const RANGES = ["15m", "1h", "24h", "custom"];
export const LAYOUT_NAMES = ["force", "layered"];
const MAX_NAMESPACES = 32;
const MAX_NAME = 253; // a Kubernetes namespace name is at most 63; node ids are longer
const MAX_ID = 1024;
const MAX_FILTER = 4096;
const MAX_EPOCH = 4102444800; // 2100-01-01

const text = (v, max) => (typeof v === "string" && v.length <= max && !/[\u0000-\u001f]/.test(v) ? v : null);

/**
 * The view a query string asks for (pure). Unknown or invalid values are left out, so the page
 * keeps its default for them. `expanded` is null when the URL does not say (the page may then
 * choose), and [] when it says "collapsed" (an empty `ns=`).
 */
export function parseView(search) {
  const q = new URLSearchParams(search);
  const view = { range: null, custom: null, expanded: null, selection: null, filter: null, layout: null };
  const range = q.get("range");
  if (RANGES.includes(range)) view.range = range;
  if (view.range === "custom") {
    const from = Number(q.get("from"));
    const to = Number(q.get("to"));
    if (Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from < to && to <= MAX_EPOCH) view.custom = { from, to };
    else view.range = null;
  }
  if (q.has("ns")) {
    const names = [];
    for (const v of q.getAll("ns")) {
      const name = text(v, MAX_NAME);
      if (name && !names.includes(name) && names.length < MAX_NAMESPACES) names.push(name);
    }
    view.expanded = names;
  }
  const kind = q.get("kind");
  const id = text(q.get("sel"), MAX_ID);
  if (id && (kind === "node" || kind === "edge")) view.selection = { kind, id };
  const filter = text(q.get("filter"), MAX_FILTER);
  if (filter !== null) view.filter = filter;
  const layout = q.get("layout");
  if (LAYOUT_NAMES.includes(layout)) view.layout = layout;
  return view;
}

/** The query string ("?..." or "") for a view (pure); defaults are left out. */
export function formatView({ range, custom, expanded, selection, filter, layout }) {
  const q = new URLSearchParams();
  if (range && range !== "15m") q.set("range", range);
  if (range === "custom" && custom) { q.set("from", String(custom.from)); q.set("to", String(custom.to)); }
  if (expanded && expanded.length) for (const ns of expanded) q.append("ns", ns);
  else if (expanded) q.set("ns", ""); // explicitly collapsed
  if (selection) { q.set("kind", selection.kind); q.set("sel", selection.id); }
  if (filter) q.set("filter", filter);
  if (layout && layout !== "force") q.set("layout", layout);
  const s = q.toString();
  return s ? `?${s}` : "";
}
