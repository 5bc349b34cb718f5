"""Cross-component contracts, one module each; every producer and consumer imports them.

- `envoy_log`: the Envoy JSON access-log keys (Envoy config <-> collector).
- `policysync.proto` (+ generated `policysync_pb2*`): collector -> node agent Report() RPC.
- `record`: the aggregated L7 record (node agent -> l7.log / server -> store -> API).
- `bulk`: the shipping endpoint (node agent -> server).
- `latency`: the mergeable latency histogram carried by all of the above.
"""
