"""The node agent (`l7scope node`): what Felix does for L7 logs in Calico, as our own process.

Modules, one concern each: `settings` (the settings file, live reload; the model is
`contracts/nodeconfig.py`), `policysync_server` (Report intake),
`metadata` + `inventory` (Kubernetes objects), `cluster_feed` (the cluster watches: metadata and
the NodeAgentConfiguration, built on `kube`), `enrich` + `ingest` (Report -> enriched updates),
`aggregate` (l7LogsFileAggregation*, per-node limit), `l7log_file` (rotated l7.log), `shipper`
(spool + bulk shipping), `selection` (capture rules, fail open), `agent` (wiring), `cli`.
"""
