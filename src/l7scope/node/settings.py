"""The node agent's settings file: `load()` (a local file: any absolute normalized host path) and
`SettingsFile` (re-read when it changes; a bad edit keeps the last good settings).

The settings model itself, with Felix's names, defaults and checks, is `contracts/nodeconfig.py`
(`NodeSettings`), shared with the operator and the cluster feed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from l7scope.contracts.nodeconfig import NodeSettings, SettingsError, from_mapping


def load(path: str | Path) -> NodeSettings:
    """A local settings file: any absolute normalized host path is accepted."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise SettingsError(f"{p}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"{p}: not YAML: {e}") from None
    return from_mapping(data, str(p), local_paths=True)


class SettingsFile:
    """A settings file re-read when its mtime or size changes; a bad edit keeps the last good one."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._sig: tuple[int, int] | None = None
        self.current = load(self.path) if self.path else NodeSettings()
        self._sig = self._signature()
        self.errors = 0
        self.last_error = ""

    def _signature(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def poll(self) -> NodeSettings | None:
        """The new settings when the file changed and is valid; None otherwise."""
        sig = self._signature()
        if sig == self._sig or sig is None or self.path is None:
            return None
        self._sig = sig
        try:
            new = load(self.path)
        except SettingsError as e:
            self.errors += 1
            self.last_error = str(e)
            return None
        if new == self.current:
            return None
        self.current = new
        return new
