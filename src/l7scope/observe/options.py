"""Command-line options the client commands share: the token file (`observe`, `top`, `status`),
the cluster options (`-P/--port-forward`, `--kubeconfig`, `--context`, `--kube-namespace`) and
the filter flags with `--not` (`observe`, `top`)."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from l7scope.contracts.auth import (
    CA_FILE_ENV,
    TOKEN_ENV,
    TokenFileError,
    check_token_text,
    default_token_file,
    find_token,
    read_token,
    tls_verify,
)
from l7scope.contracts.install import DEFAULT_NAMESPACE
from l7scope.observe import filters
from l7scope.observe.filters import FilterSpec

_KUBE_TOKEN = "l7scope.kube_token"
KUBE_META = "l7scope.kube"  # ctx.meta: the cluster options (port_forward, kubeconfig, context, namespace)
NAMESPACE_ENV = "L7SCOPE_NAMESPACE"


def default_kube_namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def cb(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            ctx.meta.setdefault(KUBE_META, {})[key] = value
        return value
    return cb


def port_forward_flag(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-P", "--port-forward", is_flag=True, expose_value=False, callback=_remember("port_forward"),
        help="Reach the cluster's l7scope server through the kubeconfig: a local port forwarded "
             "to a Ready server pod (the API server's pods/portforward), TLS verified with the "
             "operator's CA, your kubeconfig user's token sent (docs/cli.md).")(fn)


def kube_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`-P/--port-forward`, `--kubeconfig`, `--context`, `--kube-namespace` (not exposed to the
    command: `server_target` and `--kube-token` read them)."""
    fn = click.option(
        "--kube-namespace", metavar="NS", default=default_kube_namespace, expose_value=False,
        callback=_remember("namespace"),
        show_default=f"env {NAMESPACE_ENV} or {DEFAULT_NAMESPACE}",
        help="With -P: the namespace of the l7scope-server Service (-n is the namespace filter).")(fn)
    fn = click.option("--context", metavar="NAME", expose_value=False, callback=_remember("context"),
                      help="The kubeconfig context (like kubectl --context).")(fn)
    fn = click.option("--kubeconfig", type=click.Path(dir_okay=False), expose_value=False,
                      callback=_remember("kubeconfig"),
                      help="Kubeconfig file for -P and --kube-token [default: $KUBECONFIG, else "
                           "~/.kube/config].")(fn)
    return port_forward_flag(fn)


def _kube_meta() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    return dict(ctx.meta.get(KUBE_META) or {}) if ctx is not None else {}


def explicit_token(token_file: Path | None) -> str | None:
    """A token the user gave for this call (--token-file, $L7SCOPE_TOKEN), not the standalone
    server's default file: with -P the kubeconfig's token is the default."""
    try:
        if token_file is not None:
            return read_token(token_file)
        env = os.environ.get(TOKEN_ENV, "").strip()
        return check_token_text(env, f"${TOKEN_ENV}") if env else None
    except TokenFileError as e:
        raise click.UsageError(str(e)) from None


def reach_failed(e: Exception) -> click.ClickException:
    """A ReachError as the CLI's error: exit 2 for the user's own setup, else 1."""
    if getattr(e, "usage", False):
        return click.UsageError(str(e))
    return click.ClickException(str(e))


@contextlib.contextmanager
def server_target(server: str | None, token_file: Path | None, ca_file: Path | None, *,
                  kubeconfig: str | None = None, context: str | None = None,
                  namespace: str | None = None
                  ) -> Iterator[tuple[str | None, str | None, ssl.SSLContext | bool]]:
    """(server URL, token, TLS verify) for the `with` block: the options as given, or with
    `-P` a port-forward to the cluster's server for as long as the block runs. The cluster
    options come from `kube_options` unless given (`status` has its own)."""
    k = _kube_meta()
    k.update({key: v for key, v in (("kubeconfig", kubeconfig), ("context", context),
                                     ("namespace", namespace)) if v is not None})
    if not k.get("port_forward"):
        yield server, token_from(token_file), verify_from(ca_file)
        return
    ctx = click.get_current_context()
    if ctx.get_parameter_source("server") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--server and -P/--port-forward exclude each other")
    from l7scope.observe.portforward import ReachError, forward_server

    token = explicit_token(token_file)
    given_ca = ca_file is not None or bool(os.environ.get(CA_FILE_ENV))
    verify = verify_from(ca_file) if given_ca else None
    try:
        with forward_server(k.get("kubeconfig"), k.get("context"),
                            k.get("namespace") or default_kube_namespace(),
                            token=token, verify=verify) as reached:
            yield reached.url, reached.token, reached.verify
    except ReachError as e:
        raise reach_failed(e) from None


def _remember_kube_token(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_KUBE_TOKEN] = True


def token_file_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--token-file`, and `--kube-token` (read by `token_from` through the click context, so
    the commands' signatures carry only the file)."""
    fn = click.option(
        "--kube-token", is_flag=True, expose_value=False, callback=_remember_kube_token,
        help="Send the bearer token of the kubeconfig's current context ($KUBECONFIG, else "
             "~/.kube/config; a token, a token file or an exec plugin) instead of a token file, "
             "to a server running --auth kubernetes. It is a credential of your API server: "
             "use it only with your own cluster's l7scope server.")(fn)
    return click.option(
        "--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help=f"File with the server's bearer token [default: ${TOKEN_ENV}, else "
             f"{default_token_file()} when it exists].")(fn)


ca_file_option = click.option(
    "--ca-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help=f"CA bundle that signed an https server's certificate [default: ${CA_FILE_ENV}, else the "
         "system's CAs].")


def verify_from(ca_file: Path | None) -> ssl.SSLContext | bool:
    try:
        return tls_verify(ca_file)
    except TokenFileError as e:
        raise click.UsageError(str(e)) from None


def token_from(token_file: Path | None) -> str | None:
    """The token to send (the kubeconfig's with `--kube-token`), or a usage error that says what
    is wrong with the file or the kubeconfig."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_KUBE_TOKEN):  # meta is shared by nested contexts
        if token_file is not None:
            raise click.UsageError("--kube-token and --token-file exclude each other")
        return _kubeconfig_token()
    try:
        return find_token(token_file)
    except TokenFileError as e:
        raise click.UsageError(str(e)) from None


def _kubeconfig_token() -> str:
    from l7scope.observe.portforward import ReachError, kube_connect, user_token

    k = _kube_meta()
    try:
        kube = kube_connect(k.get("kubeconfig"), k.get("context"), "--kube-token")
        try:
            return user_token(kube, "--kube-token")
        finally:
            kube.close()
    except ReachError as e:
        raise reach_failed(e) from None


class NotAwareCommand(click.Command):
    """`--not --FLAG VALUE` becomes the hidden option `--not-FLAG VALUE` before click parses."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                out.extend(args[i:])
                break
            if a == "--not":
                nxt = args[i + 1] if i + 1 < len(args) else ""
                if nxt == "-n" or nxt.startswith("-n="):
                    nxt = "--namespace" + nxt[2:]
                name = nxt[2:].split("=", 1)[0] if nxt.startswith("--") else ""
                if name not in filters.FLAGS:
                    raise click.UsageError(
                        f"--not must be followed by a filter flag (--{', --'.join(filters.FLAGS)}), "
                        f"not {nxt or 'nothing'!r}", ctx)
                out.append("--not-" + nxt[2:])
                i += 2
                continue
            out.append(a)
            i += 1
        return super().parse_args(ctx, out)


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The filter flags (`--to-service`, `--http-status`, ...) and their hidden `--not-` forms."""
    for flag, help_text in reversed(filters.FLAGS.items()):
        fn = click.option(f"--not-{flag}", f"not_{flag.replace('-', '_')}", multiple=True,
                          hidden=True)(fn)
        names = ["-n", f"--{flag}"] if flag == "namespace" else [f"--{flag}"]  # as kubectl/hubble
        fn = click.option(*names, flag.replace("-", "_"), multiple=True, metavar="VALUE",
                          help=help_text + " Repeat for alternatives.")(fn)
    return fn


def spec_from_options(options: Mapping[str, Any]) -> FilterSpec:
    """The filter flags' values as a FilterSpec."""
    include: dict[str, tuple[str, ...]] = {}
    exclude: dict[str, tuple[str, ...]] = {}
    for flag in filters.FLAGS:
        key = flag.replace("-", "_")
        if options.get(key):
            include[flag] = tuple(options[key])
        if options.get("not_" + key):
            exclude[flag] = tuple(options["not_" + key])
    return FilterSpec(include, exclude, tuple(options.get("selector") or ()))
