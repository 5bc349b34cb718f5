"""Command-line options the client commands share: the token file (`observe`, `top`, `status`)
and the filter flags with `--not` (`observe`, `top`)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from l7scope.contracts.auth import (
    CA_FILE_ENV,
    TOKEN_ENV,
    TokenFileError,
    default_token_file,
    find_token,
    tls_verify,
)
from l7scope.observe import filters
from l7scope.observe.filters import FilterSpec

_KUBE_TOKEN = "l7scope.kube_token"


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
    from l7scope.kube.client import KubeError, connect

    try:
        kube = connect(in_cluster=False)
    except KubeError as e:
        raise click.UsageError(f"--kube-token: {e.message}") from None
    try:
        token = kube.credentials().token
    finally:
        kube.close()
    if not token:
        raise click.UsageError(
            "--kube-token: the kubeconfig's user has no bearer token (client certificates cannot "
            "be passed on to the l7scope server); use a user with a token or an exec plugin, or "
            "`kubectl create token <serviceaccount>` into a file for --token-file")
    return token


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
