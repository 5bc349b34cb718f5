"""The test kit: builders of test data shared by the tests and the benchmarks (mitmproxy's
`mitmproxy/test/` idea). No product module imports it (lint-imports checks that).

Modules: `record_gen` (realistic L7 records: a topology with Zipf-like popularity, routes, errors,
latency histograms; deterministic per seed), `envoy_lines` (Envoy-shaped access-log lines),
`als_entries` (Envoy gRPC ALS entries), `node_inputs` (Kubernetes objects and Policy Sync
Reports, the node agent's inputs).
"""
