"""`l7scope dashboard`: the Service Graph page of the cluster's server, in the browser, logged in.

Like `cilium hubble ui` or `istioctl dashboard kiali`: it forwards a local port to a Ready
server pod (`observe/portforward.py`), asks the server for a one-time login code with the
user's own Kubernetes token (`POST /api/v1/login/codes`), and opens
`https://127.0.0.1:PORT/login?code=...` with `webbrowser`. The server trades the code for its
session cookie (HttpOnly, SameSite=Strict) and redirects to the page; the code works once, for
minutes, so the URL in the browser's history is dead and the token never leaves the terminal.
With no browser the link is printed (stdout). The forward runs until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import os
import signal
import threading
import webbrowser
from pathlib import Path
from typing import Final

import click

from l7scope.contracts.auth import CA_FILE_ENV, CODES_PATH, LOGIN_PATH
from l7scope.contracts.install import DEFAULT_NAMESPACE
from l7scope.observe.client import ApiError, Client
from l7scope.observe.options import (
    NAMESPACE_ENV,
    ca_file_option,
    default_kube_namespace,
    explicit_token,
    reach_failed,
    token_from,
    verify_from,
)
from l7scope.observe.portforward import ReachError, forward_server

DEFAULT_LOCAL_PORT: Final = 8686

_EPILOG = """\b
Examples:
  l7scope dashboard                                  # the kubeconfig's current context
  l7scope dashboard --context prod -n l7scope-system
  l7scope dashboard --no-browser --port 9000         # print the login link instead
  l7scope dashboard --server http://127.0.0.1:8686   # a local server (the demo's), no cluster
"""


def login_link(base: str, answer: dict[str, object]) -> str:
    """The one-time login URL from the server's answer to `POST /api/v1/login/codes`; only the
    server's own login path is accepted."""
    path = str(answer.get("path") or "")
    if not path.startswith(LOGIN_PATH + "?code="):
        raise ApiError(f"the server answered {CODES_PATH} without a login path ({path[:80]!r})")
    return base.rstrip("/") + path


def mint_link(client: Client) -> str:
    try:
        return login_link(client.base, client.request("POST", CODES_PATH, {}))
    except ApiError as e:
        if e.status == 403:
            raise ApiError("the server accepted your token but you may not read any namespace "
                           "there: you need `get pods` in at least one namespace") from None
        raise


def open_page(url: str, *, browser: bool) -> bool:
    """Open `url` in the user's browser; False when there is none (or --no-browser)."""
    if not browser:
        return False
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


def _wait_for_stop() -> None:
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


@click.command("dashboard", epilog=_EPILOG,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--kubeconfig", type=click.Path(dir_okay=False),
              help="Kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].")
@click.option("--context", "kube_context", metavar="NAME",
              help="The kubeconfig context (like kubectl --context).")
@click.option("-n", "--namespace", default=default_kube_namespace,
              show_default=f"env {NAMESPACE_ENV} or {DEFAULT_NAMESPACE}",
              help="Namespace of the l7scope-server Service.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Local port on 127.0.0.1 [default: {DEFAULT_LOCAL_PORT}, or any free one when "
                   "it is taken; 0: any free one].")
@click.option("--no-browser", is_flag=True, help="Print the login link instead of opening it.")
@click.option("--server", default=None, metavar="URL",
              help="A server to open directly (no cluster, no port-forward), e.g. the demo's.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Log in with the token in this file instead of the kubeconfig user's "
                   "(also $L7SCOPE_TOKEN).")
@ca_file_option
def dashboard(kubeconfig: str | None, kube_context: str | None, namespace: str, port: int | None,
              no_browser: bool, server: str | None, token_file: Path | None,
              ca_file: Path | None) -> None:
    """Open the Service Graph page of the cluster's l7scope server, logged in as you.

    Finds the server through the kubeconfig (the Service l7scope-server), forwards a local port
    to a Ready pod through the API server, verifies TLS with the operator's CA, and opens a
    one-time login link made with your kubeconfig user's token. Runs until Ctrl-C.
    """
    if server is not None:
        with Client(server, token=token_from(token_file), verify=verify_from(ca_file)) as client:
            try:
                link = mint_link(client)
            except ApiError as e:
                raise click.ClickException(str(e)) from None
        _show(link, client.base, browser=not no_browser, forwarding=False)
        return
    token = explicit_token(token_file)
    verify = verify_from(ca_file) if ca_file is not None or os.environ.get(CA_FILE_ENV) else None
    try:
        with forward_server(kubeconfig, kube_context, namespace, what="l7scope dashboard",
                            local_port=DEFAULT_LOCAL_PORT if port is None else port,
                            fallback_port=port is None, token=token, verify=verify) as reached:
            with Client(reached.url, token=reached.token, verify=reached.verify) as client:
                try:
                    link = mint_link(client)
                except ApiError as e:
                    raise click.ClickException(str(e)) from None
            click.echo(f"forwarding {reached.url} -> pod {reached.namespace}/{reached.pod}:"
                       f"{reached.pod_port} (Ctrl-C stops)", err=True)
            _show(link, reached.url, browser=not no_browser, forwarding=True)
            _wait_for_stop()
            st = reached.forwarder.stats
            click.echo(f"stopped: {st.accepted} connections forwarded"
                       + (f", {st.dial_failures} could not reach the pod ({st.last_error})"
                          if st.dial_failures else ""), err=True)
    except ReachError as e:
        raise reach_failed(e) from None


def _show(link: str, base: str, *, browser: bool, forwarding: bool) -> None:
    if open_page(link, browser=browser):
        click.echo(f"opened {base}/ in your browser (logged in with a one-time link)", err=True)
        return
    click.echo("open this one-time login link (one use, valid 5 minutes; later, log in on "
               "the page with a token):", err=True)
    click.echo(link)
    if forwarding:
        click.echo(f"the page stays at {base}/ while this runs", err=True)
