"""Decode a block of complete access-log lines (as `tail.Tail.read()` returns it) in one call.

The fast path decodes the newline-delimited block as it is, with msgspec's `decode_lines`, into
the contract's `EnvoyLogLine` (no copy of the block). If that fails or gives another number of
objects than lines (a bad line, an empty line, two objects on one line), the block goes through
the contract's `decode_lines()`, which decodes line by line and counts the bad ones. Nothing here
raises on bad input.
"""

from __future__ import annotations

from typing import Final

import msgspec

from l7scope.contracts.envoy_log import EnvoyLogLine, decode_lines

_line_decoder: Final = msgspec.json.Decoder(EnvoyLogLine)


def decode_block(block: bytes, n_lines: int | None = None) -> tuple[list[EnvoyLogLine], int]:
    """(decoded lines, number of bad lines) of `block`: whole lines, each ending in a newline.

    `n_lines` is the number of newlines in `block` when the caller knows it (Tail counts them).
    """
    if not block:
        return [], 0
    ends = block.endswith(b"\n")
    if n_lines is None or not ends:
        n_lines = block.count(b"\n") + (not ends)
    try:
        out = _line_decoder.decode_lines(block)
        if len(out) == n_lines:
            return out, 0
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    body = block[:-1] if ends else block
    return decode_lines(body.split(b"\n"))
