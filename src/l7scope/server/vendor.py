"""The web page's front-end packages: the graph library and its layout, served at /vendor/<name>.

They come from npm (`ui/package.json`, pinned in `ui/package-lock.json`), installed into
`ui/node_modules` by `scripts/setup.sh` and never copied into the repository. Only the files
listed in VENDOR_FILES are served, one by one, and the BUNDLED ones as BUNDLE: joined in their
load order, one request instead of four (a browser opens at most six HTTP/1.1 connections to the
server, and the page's own modules and its first query need them too). When the packages are
missing, the route answers 404 with a JavaScript comment that says what to run; the page shows
the same hint in place of the graph.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

#: URL name under /vendor/ -> file inside node_modules. Load order in index.html matters.
VENDOR_FILES: Final[dict[str, str]] = {
    "cytoscape.js": "cytoscape/dist/cytoscape.min.js",
    "layout-base.js": "layout-base/layout-base.js",
    "cose-base.js": "cose-base/cose-base.js",
    "cytoscape-fcose.js": "cytoscape-fcose/cytoscape-fcose.js",
    # the layered layout, loaded by the page only when it is chosen (js/graph.js loadLayered)
    "dagre.js": "dagre/dist/dagre.min.js",
    "cytoscape-dagre.js": "cytoscape-dagre/cytoscape-dagre.js",
}
#: The files joined into BUNDLE, in load order (the graph library and its force layout).
BUNDLED: Final = ("cytoscape.js", "layout-base.js", "cose-base.js", "cytoscape-fcose.js")
#: The layered layout's files, in load order, fetched one by one when the page needs them.
LAYERED: Final = ("dagre.js", "cytoscape-dagre.js")
#: URL name under /vendor/ of the BUNDLED files in order, as one script.
BUNDLE: Final = "bundle.js"
ENV_VAR: Final = "L7SCOPE_UI_NODE_MODULES"
_MARKER: Final = "cytoscape/package.json"
MISSING_HINT: Final = (
    "front-end packages not found: run `make setup` (or `cd ui && npm ci`) in the l7scope "
    f"checkout, or point {ENV_VAR} at a node_modules directory, then restart the server"
)


def find_node_modules(env: Mapping[str, str] = os.environ, start: Path | None = None) -> Path | None:
    """`$L7SCOPE_UI_NODE_MODULES`, else the first `ui/node_modules` above this file or the cwd."""
    if env.get(ENV_VAR):
        p = Path(env[ENV_VAR])
        return p if (p / _MARKER).is_file() else None
    bases = [(start or Path(__file__)).resolve(), Path.cwd().resolve()]
    for base in bases:
        for d in (base, *base.parents):
            candidate = d / "ui" / "node_modules"
            if (candidate / _MARKER).is_file():
                return candidate
    return None


def bundle(root: Path) -> bytes | None:
    """Every BUNDLED file in order, each after a comment naming it (None if one is missing).
    The files are UMD scripts, so one after the other they behave as separate <script> tags."""
    parts: list[bytes] = []
    for name in BUNDLED:
        rel = VENDOR_FILES[name]
        path = root / rel
        if not path.is_file():
            return None
        parts.append(f"\n/* --- /vendor/{name}: node_modules/{rel} --- */\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\n;")
    return b"".join(parts)


_HEADERS: Final = {"Cache-Control": "public, max-age=3600"}


def vendor_route(node_modules: Path | None = None) -> Route:
    """The `/vendor/{name}` route (located once, when the app is built)."""
    root = node_modules if node_modules is not None else find_node_modules()
    joined: list[bytes] = []  # BUNDLE, built on its first request

    def missing() -> Response:
        return PlainTextResponse(f"/* {MISSING_HINT} */\n", status_code=404,
                                 media_type="application/javascript")

    async def vendor(request: Request) -> Response:
        name = request.path_params["name"]
        if name == BUNDLE:
            if not joined:
                body = bundle(root) if root is not None else None
                if body is None:
                    return missing()
                joined.append(body)
            return Response(joined[0], media_type="application/javascript", headers=_HEADERS)
        rel = VENDOR_FILES.get(name)
        if rel is None:
            return PlainTextResponse(f"unknown vendor file {name!r}", status_code=404)
        path = root / rel if root is not None else None
        if path is None or not path.is_file():
            return missing()
        return FileResponse(path, media_type="application/javascript", headers=_HEADERS)

    return Route("/vendor/{name}", vendor, methods=["GET", "HEAD"])
