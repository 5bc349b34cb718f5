"""Kubernetes access for every l7scope process, a gateway (the only package importing the
`kubernetes` client; it imports nothing of l7scope but `contracts`): `client` (connection +
plain-JSON requests), `watch` (list-and-watch loop that survives expiry). The node agent's
watches built on it are `node/cluster_feed.py`."""
