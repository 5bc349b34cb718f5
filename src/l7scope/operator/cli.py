"""`l7scope operator`: run the ApplicationLayer operator (kopf) against a cluster."""

from __future__ import annotations

import logging
import os

import click

_HELP = """Kubernetes operator for the ApplicationLayer resource.

Turns `ApplicationLayer tigera-secure` (l7scope.io/v1) into the l7-log-collector DaemonSet
(Envoy + collector + node agent on every node), its Envoy ConfigMap, RBAC and the server;
sets tproxyMode (and an empty policySyncPathPrefix) on NodeAgentConfiguration `default`;
reports status.state Ready once every node runs it. Deleting the ApplicationLayer removes
them again and sets tproxyMode Disabled.

\b
Example (from a workstation, with the CRDs from deploy/helm/l7scope/crds installed):
  l7scope operator --kubeconfig ~/.kube/config --namespace l7scope-system
\b
In a cluster it runs with its service account (deploy/helm/l7scope):
  l7scope operator --in-cluster --namespace l7scope-system --image ghcr.io/l7scope/l7scope:0.1.0
"""


@click.command(help=_HELP)
@click.option("--namespace", default=lambda: os.environ.get("L7SCOPE_NAMESPACE", "l7scope-system"),
              show_default="l7scope-system (env L7SCOPE_NAMESPACE)",
              help="Namespace of the DaemonSet, ConfigMap and server.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).")
@click.option("--in-cluster", is_flag=True, help="Use the pod's service account.")
@click.option("--image", default=lambda: os.environ.get("L7SCOPE_IMAGE", "ghcr.io/l7scope/l7scope:0.1.0"),
              show_default="ghcr.io/l7scope/l7scope:0.1.0 (env L7SCOPE_IMAGE)",
              help="Image of the DaemonSet and server containers (one image, every role).")
@click.option("--image-pull-policy", default="IfNotPresent", show_default=True,
              type=click.Choice(["Always", "IfNotPresent", "Never"]))
@click.option("--image-pull-secret", "image_pull_secrets", multiple=True, metavar="NAME",
              help="Secret in --namespace to pull the image with (repeatable; the chart's "
                   "imagePullSecrets): set on the DaemonSet's and the server's pods.")
@click.option("--cert-manager-issuer", metavar="[KIND/]NAME",
              help="Have cert-manager issue the server's certificate (a Certificate for this "
                   "Issuer, or ClusterIssuer/NAME) instead of the operator's own CA.")
@click.option("--liveness", metavar="HOST:PORT",
              help="Serve kopf's liveness probe at http://HOST:PORT/healthz.")
def operator(namespace: str, kubeconfig: str | None, in_cluster: bool, image: str,
             image_pull_policy: str, image_pull_secrets: tuple[str, ...],
             cert_manager_issuer: str | None, liveness: str | None) -> None:
    import kopf

    from l7scope.kube.client import KubeError, connect
    from l7scope.operator.handlers import build_registry
    from l7scope.operator.reconcile import OperatorConfig

    try:
        kube = connect(kubeconfig, in_cluster=True if in_cluster else None)
        version = kube.server_version()
    except KubeError as e:
        raise click.ClickException(str(e)) from None
    logging.getLogger(__name__).info("operator for namespace %s against %s (%s)",
                                     namespace, kube.credentials().server, version)
    issuer: tuple[str, str] | None = None
    if cert_manager_issuer:
        kind, _, name = cert_manager_issuer.rpartition("/")
        if kind not in ("", "Issuer", "ClusterIssuer") or not name:
            raise click.BadParameter("expected NAME, Issuer/NAME or ClusterIssuer/NAME",
                                     param_hint="--cert-manager-issuer")
        issuer = (name, kind or "Issuer")
    registry = build_registry(kube, OperatorConfig(namespace=namespace, image=image,
                                                   image_pull_policy=image_pull_policy,
                                                   image_pull_secrets=image_pull_secrets,
                                                   cert_manager_issuer=issuer))
    kopf.run(registry=registry, standalone=True, namespaces=[namespace],
             liveness_endpoint=f"http://{liveness}/healthz" if liveness else None)
