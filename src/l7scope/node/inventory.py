"""A directory of ordinary Kubernetes YAML files feeding the metadata cache (no cluster needed).

Every `*.yaml` / `*.yml` / `*.json` file in the directory (not recursive) may hold several
documents (`---`) and `kind: List` objects. `poll()` compares the files' names, mtimes and sizes
and, when anything changed, re-reads them and calls `cache.replace_all()`; the demo and the tests
edit these files to add pods or annotate Services. A file that does not parse keeps its last good
objects (counted in `errors`, reason in `last_error`), so a half-written edit does not delete pods.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from l7scope.node.metadata import MetadataCache

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml", ".json")


def _flatten(doc: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(doc, Mapping):
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                yield from _flatten(item)
        else:
            yield doc


def read_file(path: Path) -> list[Mapping[str, Any]]:
    with path.open() as f:
        return [obj for doc in yaml.safe_load_all(f) for obj in _flatten(doc)]


class Inventory:
    def __init__(self, directory: str | Path, cache: MetadataCache) -> None:
        self.directory = Path(directory)
        self.cache = cache
        self._sig: tuple[tuple[str, int, int], ...] | None = None
        self._objects: dict[str, list[Mapping[str, Any]]] = {}
        self.errors = 0
        self.last_error = ""
        self.reloads = 0

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        try:
            entries = sorted(self.directory.iterdir())
        except OSError:
            return ()
        for p in entries:
            if p.suffix in _SUFFIXES and not p.name.startswith("."):
                try:
                    st = p.stat()
                except OSError:
                    continue
                out.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def poll(self) -> bool:
        """Re-read the directory if it changed; True when the cache was replaced."""
        sig = self._signature()
        if sig == self._sig:
            return False
        self._sig = sig
        objects: dict[str, list[Mapping[str, Any]]] = {}
        for name, _, _ in sig:
            try:
                objects[name] = read_file(self.directory / name)
            except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
                self.errors += 1
                self.last_error = f"{name}: {e}"
                log.error("inventory: cannot read %s: %s (keeping its last good objects)", name, e)
                objects[name] = self._objects.get(name, [])
        self._objects = objects
        self.cache.replace_all(obj for objs in objects.values() for obj in objs)
        self.reloads += 1
        return True
