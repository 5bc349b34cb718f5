"""The status endpoint every long-running part serves: `GET /healthz` and `GET /stats` (JSON).

The collector and the node agent each start one on their `--status-addr` (loopback by default);
`l7scope status` and the Kubernetes probes read it. It runs in a daemon thread of its own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class StatusEndpoint:
    def __init__(self, addr: str, healthy: Callable[[], bool],
                 stats: Callable[[], Mapping[str, Any]]) -> None:
        host, _, port = addr.rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/healthz":
                    ok = healthy()
                    code, body = (200 if ok else 503), {"ok": ok}
                elif self.path == "/stats":
                    code, body = 200, dict(stats())
                else:
                    code, body = 404, {"error": "not found; try /healthz or /stats"}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="status",
                                        daemon=True)
        self._thread.start()
        log.info("status on http://%s:%d/stats", *self._http.server_address[:2])

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
