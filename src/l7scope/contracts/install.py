"""The names of what the operator installs in a cluster that clients look up there: the
namespace it installs into by default, the server's Service (and workload) and port, the
ConfigMap with the CA bundle that signed the server's certificate, and the collector
DaemonSet. The operator renders these objects (`operator/render.py`, `operator/tls.py`); the
CLI finds the server through them (`l7scope dashboard`, `-P/--port-forward`, `status
--kubeconfig`)."""

from __future__ import annotations

from typing import Final

from l7scope.contracts.api import DEFAULT_PORT

DEFAULT_NAMESPACE: Final = "l7scope-system"
#: the server's Service, and its StatefulSet (embedded store) or Deployment (ClickHouse)
SERVER: Final = "l7scope-server"
SERVER_PORT: Final = DEFAULT_PORT
#: ConfigMap holding the CA bundle (certificates only) under CA_CERT_KEY
CA_CONFIGMAP: Final = "l7scope-server-ca"
CA_CERT_KEY: Final = "ca.crt"
DAEMONSET: Final = "l7-log-collector"
