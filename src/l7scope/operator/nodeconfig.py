"""The node-agent configuration resource: `NodeAgentConfiguration` (cluster-scoped, one object
named `default`), whose `spec` holds Felix's field names exactly as `l7scope.contracts.nodeconfig.NodeSettings`
reads them (`policySyncPathPrefix`, `tproxyMode`, `tproxyPort`, `tproxyUpstreamConnMark`,
`l7Logs*`) plus l7scope's `tproxyMark`. The CRD schema is generated from that model (host path
pattern, port range); the mark rules are checked by the model. The node agents watch it and
apply changes live; the operator sets `tproxyMode` and, when empty, `policySyncPathPrefix`. Pure.

The workshop's step 1 becomes:

    kubectl patch nodeagentconfiguration default --type=merge \\
        -p '{"spec":{"policySyncPathPrefix":"/var/run/nodeagent"}}'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from l7scope.contracts import policysync


def tproxy_patch(spec: Mapping[str, Any] | None, collect_logs: bool) -> dict[str, Any]:
    """The merge patch of `spec` the operator wants ({} when nothing changes).

    Collecting: `tproxyMode: Enabled` (an explicit `EnabledAllServices` is kept) and
    `policySyncPathPrefix: /var/run/nodeagent` when unset or empty. Not collecting:
    `tproxyMode: Disabled`; the prefix is left alone (as Calico's operator does)."""
    spec = spec or {}
    patch: dict[str, Any] = {}
    mode = spec.get("tproxyMode")
    if collect_logs:
        if mode not in ("Enabled", "EnabledAllServices"):
            patch["tproxyMode"] = "Enabled"
        if not spec.get("policySyncPathPrefix"):
            patch["policySyncPathPrefix"] = policysync.DEFAULT_PREFIX
    elif mode != "Disabled":
        patch["tproxyMode"] = "Disabled"
    return patch
