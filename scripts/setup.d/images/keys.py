#!/usr/bin/env python3
"""The cache keys of the test node's images, from their inputs: one place for images.sh (which
builds `<cache>/<image>-<key>/image.tar`) and tests/cluster (which checks that the image a
checkout selected is the one its sources give).

    keys.py ROOT        prints `pause_key=... base_key=... app_key=...` for the shell

The project image's key covers the base's key, this script, images.sh, mkoci.py, pyproject.toml,
README.md, requirements/all.lock (the image installs from it), ui/package*.json and every file under src/ (not __pycache__, not *.egg-info): two
checkouts with the same sources share one image, any change gives a new one.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the packages debootstrap adds to the base (its key covers them)
BASE_PACKAGES = "python3,python3-venv,nftables,iproute2,ca-certificates,procps"
APP_FILES = ("pyproject.toml", "README.md", "requirements/all.lock", "ui/package.json",
             "ui/package-lock.json")


def _short(h: hashlib._Hash) -> str:
    return h.hexdigest()[:16]


def pause_key() -> str:
    return _short(hashlib.sha256((HERE / "pause.c").read_bytes() + (HERE / "mkoci.py").read_bytes()))


def base_key() -> str:
    return _short(hashlib.sha256(f"bookworm minbase {BASE_PACKAGES}\n".encode()
                                 + (HERE / "mkoci.py").read_bytes()))


def app_key(root: Path) -> str:
    h = hashlib.sha256(base_key().encode())
    for f in (HERE / "keys.py", HERE / "mkoci.py", HERE.parent / "images.sh",
              *(root / p for p in APP_FILES)):
        h.update(f.read_bytes())
    src = root / "src"
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if not p.is_file() or "__pycache__" in rel.parts \
                or any(part.endswith(".egg-info") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0".encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return _short(h)


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    print(f"pause_key={pause_key()} base_key={base_key()} app_key={app_key(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
