"""Decode a block of complete access-log lines (as `tail.Tail.read()` returns it) in one call.

The fast path turns the block into one JSON array (newlines become commas: JSON strings cannot
hold a raw newline) and decodes it with msgspec into the contract's `EnvoyLogLine`. If that
fails (a bad line, an empty line), the block goes through the contract's `decode_lines()`, which
decodes line by line and counts the bad ones. Nothing here raises on bad input: before, an
overlong UTF-8 sequence or deep nesting raised out of the fast path and the reader dropped the
whole block uncounted.
"""

from __future__ import annotations

from typing import Final

import msgspec

from l7scope.contracts.envoy_log import EnvoyLogLine, decode_lines

_block_decoder: Final = msgspec.json.Decoder(list[EnvoyLogLine])


def decode_block(block: bytes, n_lines: int | None = None) -> tuple[list[EnvoyLogLine], int]:
    """(decoded lines, number of bad lines) of `block`: whole lines, each ending in a newline.

    `n_lines` is the number of newlines in `block` when the caller knows it (Tail counts them).
    """
    if not block:
        return [], 0
    body = block[:-1] if block.endswith(b"\n") else block
    if n_lines is None or not block.endswith(b"\n"):
        n_lines = body.count(b"\n") + 1
    try:
        out = _block_decoder.decode(b"[" + body.replace(b"\n", b",") + b"]")
        if len(out) == n_lines:
            return out, 0
    except (ValueError, RecursionError):  # msgspec's errors, UnicodeDecodeError, deep nesting
        pass
    return decode_lines(body.split(b"\n"))
