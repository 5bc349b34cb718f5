"""Command-line options every client command shares (`observe`, `top`, `status`)."""

from __future__ import annotations

from pathlib import Path

import click

from l7scope.contracts.auth import TOKEN_ENV, TokenFileError, default_token_file, find_token

token_file_option = click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help=f"File with the server's bearer token [default: ${TOKEN_ENV}, else {default_token_file()} "
         "when it exists].")


def token_from(token_file: Path | None) -> str | None:
    """The token to send, or a usage error that says what is wrong with the file."""
    try:
        return find_token(token_file)
    except TokenFileError as e:
        raise click.UsageError(str(e)) from None
