"""Cross-component contracts, one module each; every producer and consumer imports them, and they
import nothing else of l7scope (the bottom floor of the layers, checked by `lint-imports`).

- `envoy_log`: the Envoy JSON access-log keys (Envoy config <-> collector).
- `policysync.proto` (+ generated `policysync_pb2*`): collector -> node agent Report() RPC.
- `record`: the aggregated L7 record (node agent -> l7.log / server -> store -> API).
- `bulk`: the shipping endpoint and its typed answer (node agent -> server).
- `latency`: the mergeable latency histogram carried by all of the above.
- `api`: the query API's paths, default port/URL and error shape (server <-> CLI, operator, demo).
- `auth`: the bearer token, its file and the session cookie (server <-> every client).
- `selector`, `fields`, `timerange`: the selector language, the query field names and the time
  ranges (server <-> CLI).
- `status`: the `/healthz` + `/stats` endpoint and the counter names its readers use (collector,
  node agent -> `l7scope status`, the demo).
- `demo_state`: the demo's state file (demo -> `l7scope status`).
- `nodeconfig`: the NodeAgentConfiguration resource and its spec model (operator <-> node agent).
"""
