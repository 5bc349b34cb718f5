"""Where the Policy Sync socket lives, and the constants both ends of Report() agree on.

The node agent serves `felix.PolicySync` (policysync.proto) on a unix socket named SOCKET_NAME
inside the directory `policySyncPathPrefix` (default DEFAULT_PREFIX), created owner-only. The
collector dials it with a gRPC target `unix://<prefix>/socket`.

One `DataplaneStats` per connection tuple per collector interval: `http_data` holds one entry
per unique request key (sums, max, count), and `stats` holds one Statistic
{direction: IN, relativity: DELTA, kind: HTTP_DATA, action: ALLOWED, value: <every request seen
on that tuple in the interval>}. A tuple whose requests were all over the collector's
`logRequestsPerInterval` cap carries a single HTTPData built from the tuple only (count 0, type
from the tuple), so the node agent still counts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

DEFAULT_PREFIX: Final = "/var/run/nodeagent"
SOCKET_NAME: Final = "socket"


def socket_path(prefix: str | Path = DEFAULT_PREFIX) -> Path:
    return Path(prefix) / SOCKET_NAME


def dial_target(path: str | Path) -> str:
    """gRPC target for a unix socket path (accepts an existing `unix:` target unchanged)."""
    s = str(path)
    return s if s.startswith("unix:") else f"unix://{Path(s).resolve()}"
