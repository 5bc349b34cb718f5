"""The web page's static side: the /vendor route for the npm packages (present, missing, unknown
name) and a guard that the page's scripts never hand data to an HTML parser."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from l7scope.server import vendor

UI = Path(vendor.__file__).parent / "ui"


def _fake_node_modules(root: Path) -> Path:
    for rel in vendor.VENDOR_FILES.values():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"/* {rel} */\n")
    (root / "cytoscape" / "package.json").write_text("{}")
    return root


def _client(node_modules: Path) -> httpx.AsyncClient:
    app = Starlette(routes=[vendor.vendor_route(node_modules)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui")


async def test_serves_only_the_listed_files(tmp_path: Path) -> None:
    nm = _fake_node_modules(tmp_path / "node_modules")
    (nm / "cytoscape" / "secret.txt").write_text("no")
    async with _client(nm) as client:
        r = await client.get("/vendor/cytoscape-fcose.js")
        assert r.status_code == 200
        assert r.text == "/* cytoscape-fcose/cytoscape-fcose.js */\n"
        assert r.headers["content-type"].startswith("application/javascript")
        assert (await client.get("/vendor/secret.txt")).status_code == 404
        assert (await client.get("/vendor/..%2Fcytoscape%2Fsecret.txt")).status_code == 404


async def test_missing_packages_answer_404_with_the_fix(tmp_path: Path) -> None:
    async with _client(tmp_path / "nothing") as client:
        r = await client.get("/vendor/cytoscape.js")
    assert r.status_code == 404
    assert "npm ci" in r.text and "make setup" in r.text


def test_find_node_modules_env_then_parents(tmp_path: Path) -> None:
    nm = _fake_node_modules(tmp_path / "repo" / "ui" / "node_modules")
    assert vendor.find_node_modules({vendor.ENV_VAR: str(nm)}) == nm
    assert vendor.find_node_modules({vendor.ENV_VAR: str(tmp_path / "nope")}) is None
    deep = tmp_path / "repo" / "src" / "pkg" / "mod.py"
    assert vendor.find_node_modules({}, start=deep) == nm


def test_the_repository_checkout_finds_its_own_packages() -> None:
    found = vendor.find_node_modules({})
    if found is None:
        pytest.skip("ui/node_modules not installed (scripts/setup.sh runs npm ci)")
    for rel in vendor.VENDOR_FILES.values():
        assert (found / rel).is_file(), rel


def test_every_vendor_file_is_bundled_or_layered() -> None:
    assert set(vendor.BUNDLED) | set(vendor.LAYERED) == set(vendor.VENDOR_FILES)
    assert not set(vendor.BUNDLED) & set(vendor.LAYERED)
    graph = (UI / "js" / "graph.js").read_text()
    assert [f"/vendor/{name}" for name in vendor.LAYERED] == re.findall(r'"(/vendor/[^"]+)"', graph)


def test_index_and_worker_load_the_bundle() -> None:
    html = (UI / "index.html").read_text()
    assert re.findall(r'src="/vendor/([^"]+)"', html) == [vendor.BUNDLE]
    worker = (UI / "js" / "layout-worker.js").read_text()
    assert re.findall(r'importScripts\("/vendor/([^"]+)"\)', worker) == [vendor.BUNDLE]


async def test_bundle_joins_every_file_in_order(tmp_path: Path) -> None:
    nm = _fake_node_modules(tmp_path / "node_modules")
    async with _client(nm) as client:
        r = await client.get(f"/vendor/{vendor.BUNDLE}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/javascript")
        at = [r.text.index(f"/* {vendor.VENDOR_FILES[name]} */") for name in vendor.BUNDLED]
        assert at == sorted(at)
        for name in vendor.LAYERED:  # fetched on demand, not in the bundle
            assert vendor.VENDOR_FILES[name] not in r.text
        (nm / "cytoscape-fcose" / "cytoscape-fcose.js").unlink()
        assert (await client.get(f"/vendor/{vendor.BUNDLE}")).text == r.text  # built once
    async with _client(nm) as client:  # a new server with a package missing: the fix, not half a bundle
        r = await client.get(f"/vendor/{vendor.BUNDLE}")
        assert r.status_code == 404 and "npm ci" in r.text


def test_the_one_inline_script_is_admitted_by_its_hash() -> None:
    """index.html has one inline script (the first query) and the CSP admits exactly its text."""
    html = (UI / "index.html").read_text()
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert csp is not None
    script_src = next(d for d in csp.group(1).split(";") if d.strip().startswith("script-src"))
    assert script_src.split()[1:] == ["'self'", f"'sha256-{digest}'"]
    for sink in ("innerHTML", "eval(", "new Function"):
        assert sink not in inline[0]


@pytest.mark.parametrize("path", sorted(p.name for p in (UI / "js").glob("*.js")))
def test_scripts_never_parse_html(path: str) -> None:
    """URLs and user agents are attacker-controlled: the page builds DOM with text nodes only."""
    code = (UI / "js" / path).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser",
                 "createContextualFragment", "eval(", "new Function"):
        hits = [ln for ln in code.splitlines() if sink in ln and "not allowed" not in ln]
        assert not hits, f"{path} uses {sink}: {hits}"
