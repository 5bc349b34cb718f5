// Starts the first service-graph query while the page's scripts and the graph library are still
// loading; main.js uses the answer once, if its first request is the same. Loaded as a plain
// script at the top of <head> (the Content-Security-Policy forbids inline scripts).
(() => {
  const body = JSON.stringify({ time_range: { from: "now-15m", to: "now" }, expand: [], selector: "", top_routes: 5 });
  const answer = fetch("/api/v1/servicegraph", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body,
  }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
  window.l7scopePrefetch = { body, answer };
})();
