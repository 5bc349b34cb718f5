"""Route templates: raw URL paths -> route templates such as `/product/{id}` (issue 17).

The node agent applies them where the aggregation key is built (`node/aggregate.py`), so
`/product/1` and `/product/2` fold into one record whose `url` is `/product/{id}`; the server, the
graph's top routes, the page and the metrics see only templated URLs. The config (`RouteSettings`)
is part of the node agent's settings (`NodeSettings.l7RouteTemplates`, `contracts/nodeconfig.py`).

Rules, in order:
1. User rules (`rules`): a pattern of `/`-separated segments, each literal or a `{name}`
   placeholder matching any one non-empty segment; the first rule whose segment count and literals
   match gives its pattern as the template.
2. Built-in segment rules (`builtin: true`), per segment: all digits -> `{int}`; a UUID ->
   `{uuid}`; 8+ hex digits with at least one digit -> `{hex}`; 16+ RFC 4648 base32 characters (one
   case, at least one of `2-7`) -> `{base32}`.

A path no rule changes stays as it is. The cardinality bound (`max_routes_per_service`) is kept by
the aggregator: the distinct templates of one Service in one interval beyond the bound become
`OTHER_ROUTE`, and those requests are counted (`requests_route_other`).

`Templater.template(path)` caches its answers per distinct raw path (bounded: the cache is
cleared when it reaches `cache_size` entries), so the hot path is one dict lookup.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

OTHER_ROUTE: Final = "/{other}"
"""The template of a Service's requests beyond `max_routes_per_service` in one interval."""

_PLACEHOLDER = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")
_INT = re.compile(r"^[0-9]+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^(?=[^0-9]*[0-9])[0-9a-fA-F]{8,}$")
_BASE32 = re.compile(r"^(?=[^2-7]*[2-7])(?:[A-Z2-7]{16,}|[a-z2-7]{16,})=*$")


class RouteSettings(BaseModel):
    """Route template settings (`l7RouteTemplates` in the node agent's settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    enabled: bool = True
    """False: URLs are aggregated raw (as Calico does)."""
    builtin: bool = True
    """The built-in segment rules ({int}, {uuid}, {hex}, {base32})."""
    rules: tuple[str, ...] = ()
    """User rules, e.g. `/product/{id}`; tried before the built-in rules, first match wins."""
    max_routes_per_service: int = Field(default=100, alias="maxRoutesPerService", ge=1)
    """Distinct templates per Service per interval; the rest is counted into `/{other}`."""
    cache_size: int = Field(default=65536, alias="cacheSize", ge=16)
    """Distinct raw paths whose templates are cached."""

    @field_validator("rules")
    @classmethod
    def _check_rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for rule in v:
            parse_rule(rule)
        return v


def parse_rule(rule: str) -> tuple[str | None, ...]:
    """A user rule's segments: the literal text, or None for a `{name}` placeholder."""
    if not rule.startswith("/") or len(rule) > 1024:
        raise ValueError(f"a route rule starts with '/' and has at most 1024 characters: {rule!r}")
    out: list[str | None] = []
    for seg in rule[1:].split("/"):
        if "{" in seg or "}" in seg:
            if not _PLACEHOLDER.match(seg):
                raise ValueError(f"a placeholder is a whole segment like {{id}}: {seg!r} in {rule!r}")
            out.append(None)
        else:
            out.append(seg)
    return tuple(out)


def builtin_segment(seg: str) -> str:
    """The built-in template of one path segment (the segment itself when no rule matches)."""
    if not seg:
        return seg
    if _INT.match(seg):
        return "{int}"
    if len(seg) == 36 and _UUID.match(seg):
        return "{uuid}"
    if len(seg) >= 8 and _HEX.match(seg):
        return "{hex}"
    if len(seg) >= 16 and _BASE32.match(seg):
        return "{base32}"
    return seg


class Templater:
    """Applies `RouteSettings` to raw paths (no query string), with a per-path cache."""

    def __init__(self, settings: RouteSettings) -> None:
        self.settings = settings
        self._rules = [(rule, parse_rule(rule)) for rule in settings.rules]
        self._cache: dict[str, str] = {}
        self.cache_clears = 0

    def template(self, path: str) -> str:
        t = self._cache.get(path)
        if t is None:
            if len(self._cache) >= self.settings.cache_size:
                self._cache.clear()
                self.cache_clears += 1
            t = self._cache[path] = self._compute(path)
        return t

    def _compute(self, path: str) -> str:
        if not self.settings.enabled or not path.startswith("/"):
            return path
        segs = path[1:].split("/")
        for rule, parts in self._rules:
            if len(parts) == len(segs) and all(
                    (p is None and s != "") or p == s for p, s in zip(parts, segs, strict=True)):
                return rule
        if not self.settings.builtin:
            return path
        return "/" + "/".join(builtin_segment(s) for s in segs)
