"""`l7scope status`: health and counters of every part.

`discovery` (the demo's state file: where the local parts are), `probe` (ask each part, judge
its health), `cluster` (the same from the Kubernetes API), `cli` (render, exit code).
"""
