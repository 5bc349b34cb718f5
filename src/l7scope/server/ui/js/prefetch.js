// Starts the first service-graph query while the page's scripts and the graph library are still
// loading; main.js uses the answer once, if its first request is the same. Loaded as an async
// script at the top of <head> (the Content-Security-Policy forbids inline scripts; async, so the
// parser does not wait for it).
(() => {
  const body = JSON.stringify({ time_range: { from: "now-15m", to: "now" }, expand: [], selector: "", top_routes: 5 });
  const answer = fetch("/api/v1/servicegraph", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body,
    priority: "high", // ahead of the page's own files: the graph waits for this answer
  }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
  window.l7scopePrefetch = { body, answer };
})();
