"""The node-agent configuration resource's identity: `NodeAgentConfiguration` (cluster-scoped,
one object named `default`), its group, version, plural and path.

The one owner of these names: the operator creates and patches the object
(`operator/reconcile.py`, `operator/crd.py` for its CRD) and the node agents watch it
(`node/cluster_feed.py`). Its `spec` holds Felix's field names exactly as
`l7scope.node.settings` reads them.
"""

from __future__ import annotations

from typing import Any, Final

GROUP: Final = "l7scope.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "NodeAgentConfiguration"
PLURAL: Final = "nodeagentconfigurations"
NAME: Final = "default"
PATH: Final = f"/apis/{API_VERSION}/{PLURAL}/{NAME}"


def empty() -> dict[str, Any]:
    """The object with an empty spec (every setting at its default)."""
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": NAME}, "spec": {}}
