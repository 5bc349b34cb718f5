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

token_file_option = click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help=f"File with the server's bearer token [default: ${TOKEN_ENV}, else {default_token_file()} "
         "when it exists].")


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
    """The token to send, or a usage error that says what is wrong with the file."""
    try:
        return find_token(token_file)
    except TokenFileError as e:
        raise click.UsageError(str(e)) from None


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
