"""The ApplicationLayer's `status`: state plus metav1.Condition-style conditions. Pure.

States: `Ready` (the l7-log-collector DaemonSet is fully available), `Progressing` (pods still
starting or rolling), `Degraded` (the spec or the node-agent configuration is invalid, or
applying failed: the message says why), `Disabled` (log collection is off, nothing runs).
Conditions `Ready`, `Progressing` and `Degraded` keep their `lastTransitionTime` while their
status does not change, so rewriting the same status is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STATES = ("Ready", "Progressing", "Degraded", "Disabled")


def build(state: str, message: str, *, generation: int, now: str,
          previous: Mapping[str, Any] | None = None, warnings: Sequence[str] = (),
          nodes_ready: str | None = None) -> dict[str, Any]:
    """The full status for `state`; `now` is an RFC 3339 timestamp; `nodes_ready` (`3/3`) is
    the collector DaemonSet's available/desired pods, shown by `kubectl get`."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    prev = {c.get("type"): c for c in (previous or {}).get("conditions") or [] if isinstance(c, Mapping)}
    reason = {"Ready": "AllAvailable", "Progressing": "Progressing", "Degraded": "Invalid",
              "Disabled": "CollectionDisabled"}[state]
    full_message = message if not warnings else f"{message} (warnings: {'; '.join(warnings)})"
    wanted = {
        "Ready": state == "Ready",
        "Progressing": state == "Progressing",
        "Degraded": state == "Degraded",
    }
    conditions = []
    for ctype, on in wanted.items():
        status = "True" if on else "False"
        old = prev.get(ctype)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else now
        conditions.append({
            "type": ctype, "status": status,
            "reason": reason if on else f"Not{ctype}",
            "message": full_message if on else "",
            "lastTransitionTime": since or now,
            "observedGeneration": generation,
        })
    out: dict[str, Any] = {"state": state, "conditions": conditions, "observedGeneration": generation}
    if nodes_ready is not None:
        out["nodesReady"] = nodes_ready
    return out


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """True when writing `b` over `a` would change nothing a reader cares about."""
    if not a:
        return False
    return (a.get("state") == b.get("state") and a.get("observedGeneration") == b.get("observedGeneration")
            and a.get("nodesReady") == b.get("nodesReady") and _conds(a) == _conds(b))


def _conds(s: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                  for c in s.get("conditions") or [] if isinstance(c, Mapping))
