"""Kubernetes access for every l7scope process (the only package importing the `kubernetes`
client): `client` (connection + plain-JSON requests), `watch` (list-and-watch loop that
survives expiry), `feed` (the node agent's metadata and configuration watches)."""
