"""`l7scope envoy-config`: print the Envoy bootstrap l7scope runs."""

from __future__ import annotations

import click
from pydantic import ValidationError

from l7scope.proxy.bootstrap import (
    DEFAULT_ACCESS_LOG_PATH,
    DEFAULT_ADMIN_ADDRESS,
    EnvoySettings,
    render_yaml,
)


@click.command(name="envoy-config")
@click.option("--tproxy-port", type=int, default=16001, show_default=True,
              help="Port of the transparent listener (the TPROXY target).")
@click.option("--listen-address", default="0.0.0.0", show_default=True,
              help="Address of the transparent listener.")
@click.option("--access-log", "access_log_path", default=DEFAULT_ACCESS_LOG_PATH,
              show_default=True, help="JSON access log file the collector tails.")
@click.option("--admin-address", default=DEFAULT_ADMIN_ADDRESS, show_default=True,
              help="Admin endpoint: unix:/absolute/path (socket, mode 0660) or ip:port on loopback.")
@click.option("--xff-num-trusted-hops", type=int, default=0, show_default=True,
              help="X-Forwarded-For hops to trust.")
@click.option("--use-remote-address/--no-use-remote-address", default=False, show_default=True,
              help="Let Envoy treat the peer address as the client address (edge mode).")
@click.option("--als-socket", default=None, metavar="PATH",
              help="Also send each HTTP request to the collector's gRPC Access Log Service "
                   "on this unix socket.")
@click.option("--als-log-name", default="l7scope", show_default=True,
              help="log_name on each Access Log Service stream (e.g. the node name).")
@click.option("--connect-timeout", "connect_timeout_s", type=float, default=10.0,
              show_default=True, help="Upstream connect timeout, seconds.")
@click.option("--listener-filters-timeout", "listener_filters_timeout_s", type=float,
              default=2.0, show_default=True,
              help="Seconds the TLS/HTTP inspectors wait for a client's first bytes before the "
                   "connection continues as plain TCP.")
@click.option("--node-id", default="l7scope", show_default=True, help="Envoy node id.")
@click.option("--detail-request-header", "detail_request_headers", multiple=True, metavar="NAME",
              help="A request header logged for request detail (repeatable; authorization, "
                   "proxy-authorization and cookie are never logged). docs/detail.md")
@click.option("--detail-response-header", "detail_response_headers", multiple=True, metavar="NAME",
              help="A response header logged for request detail (repeatable; set-cookie is never logged).")
@click.option("--detail-log/--no-detail-log", default=True, show_default=True,
              help="Log the request-detail object (trace headers, the allowlisted headers).")
def envoy_config(**options: object) -> None:
    """Print the Envoy configuration (YAML) of the per-node transparent proxy.

    One transparent listener with filter chains for TLS passthrough (SNI logged), HTTP/1.x,
    h2c and plain TCP, all forwarding to the connection's original destination, and a JSON
    access log in the format the collector reads.

    \b
    Example:
      l7scope envoy-config --tproxy-port 16001 --access-log /tmp/envoy.log > envoy.yaml
      envoy --mode validate -c envoy.yaml
    """
    try:
        settings = EnvoySettings.model_validate(options)
    except ValidationError as e:
        raise click.UsageError(str(e)) from e
    click.echo(render_yaml(settings), nl=False)
