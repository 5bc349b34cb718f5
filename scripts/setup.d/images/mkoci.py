#!/usr/bin/env python3
"""Pack directories into an OCI image-layout tarball, one layer per directory, with no daemon and
no registry: what `ctr images import` (and `buildah pull oci-archive:`) reads.

    mkoci.py OUT.tar NAME --layer DIR [--layer DIR ...] [--entrypoint JSON] [--cmd JSON]
             [--env K=V ...] [--workdir DIR] [--user UID:GID]

The layers are uncompressed tars with sorted names, numeric owners and mtime 0, so the same
directories give the same digests. NAME goes into the `io.containerd.image.name` annotation,
which is the name containerd imports the image under.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Blobs:
    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True)

    def add_file(self, path: Path, media_type: str) -> dict[str, Any]:
        digest = sha256_file(path)
        target = self.dir / digest
        os.replace(path, target)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": target.stat().st_size}

    def add_json(self, obj: Any, media_type: str) -> dict[str, Any]:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(data).hexdigest()
        (self.dir / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def layer_tar(src: Path, out: Path) -> None:
    subprocess.run(["tar", "-C", str(src), "--sort=name", "--numeric-owner", "--xattrs",
                    "--mtime=@0", "-cf", str(out), "."], check=True)


def build(args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix=".mkoci-", dir=out.parent) as tmp:
        root = Path(tmp)
        blobs = Blobs(root)
        layers, diff_ids = [], []
        for i, d in enumerate(args.layer):
            t = root / f"layer{i}.tar"
            layer_tar(Path(d), t)
            desc = blobs.add_file(t, "application/vnd.oci.image.layer.v1.tar")
            layers.append(desc)
            diff_ids.append(desc["digest"])  # uncompressed: the diff id is the layer digest
        config: dict[str, Any] = {"Env": [DEFAULT_PATH] if not args.env else args.env,
                                  "WorkingDir": args.workdir}
        if args.user:
            config["User"] = args.user
        if args.entrypoint:
            config["Entrypoint"] = json.loads(args.entrypoint)
        if args.cmd:
            config["Cmd"] = json.loads(args.cmd)
        image_config = {"architecture": "amd64", "os": "linux", "config": config,
                        "rootfs": {"type": "layers", "diff_ids": diff_ids},
                        "history": [{"created_by": f"mkoci.py layer {d}"} for d in args.layer]}
        cfg = blobs.add_json(image_config, "application/vnd.oci.image.config.v1+json")
        manifest = blobs.add_json({"schemaVersion": 2,
                                   "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "config": cfg, "layers": layers},
                                  "application/vnd.oci.image.manifest.v1+json")
        tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
        manifest["annotations"] = {"io.containerd.image.name": args.name,
                                   "org.opencontainers.image.ref.name": tag}
        manifest["platform"] = {"architecture": "amd64", "os": "linux"}
        (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        partial = out.with_name(out.name + ".partial")
        subprocess.run(["tar", "-C", str(root), "--sort=name", "--mtime=@0", "--owner=0",
                        "--group=0", "-cf", str(partial), "oci-layout", "index.json", "blobs"],
                       check=True)
        os.replace(partial, out)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("name")
    p.add_argument("--layer", action="append", required=True)
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--user")
    build(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
