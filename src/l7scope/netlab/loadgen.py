"""A scripted HTTP/1.1 client to run inside a pod: `python -m l7scope.netlab.loadgen`.

Reads a plan (JSON list of requests) on stdin, sends them to `--target host:port` one after the
other over keep-alive connections (a new connection every `--per-connection` requests), and
prints one JSON object: `{"results": [[status, response_body_bytes], ...], "errors": N}`.

A plan entry: `{"method": "POST", "path": "/a/b", "body_bytes": 10, "reply_bytes": 5,
"user_agent": "ua", "headers": {"x-request-id": "r1"}}`; all but method and path optional. The podserver `http` mode answers
`/status/NNN` paths with NNN and `reply_bytes` bytes of body.

    echo '[{"method":"GET","path":"/status/404"}]' | \\
        ip netns exec POD python -m l7scope.netlab.loadgen --target 10.96.0.10:80
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from typing import Any


def run_plan(target: str, plan: list[dict[str, Any]], per_connection: int = 100,
             timeout: float = 10.0) -> dict[str, Any]:
    host, _, port = target.rpartition(":")
    host = host.strip("[]")  # [v6]:port
    results: list[list[int]] = []
    errors = 0
    conn: http.client.HTTPConnection | None = None
    used = 0
    for req in plan:
        if conn is None or used >= per_connection:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
            used = 0
        body = b"b" * int(req.get("body_bytes", 0))
        headers = {"x-reply-bytes": str(int(req.get("reply_bytes", 2)))}
        if "user_agent" in req:
            headers["user-agent"] = str(req["user_agent"])
        headers.update({str(k): str(v) for k, v in (req.get("headers") or {}).items()})
        try:
            conn.request(req["method"], req["path"], body=body if body else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            results.append([resp.status, len(data)])
            used += 1
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            errors += 1
            results.append([0, 0])
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return {"results": results, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l7scope.netlab.loadgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="host:port")
    ap.add_argument("--per-connection", type=int, default=100,
                    help="requests per keep-alive connection")
    a = ap.parse_args(argv)
    plan = json.load(sys.stdin)
    print(json.dumps(run_plan(a.target, plan, a.per_connection)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
