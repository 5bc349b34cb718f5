"""`l7scope status`: health and counters of every part (a terminal view).

`probe` (ask each part, judge its health), `cluster` (the same from the Kubernetes API), `cli`
(render, exit code). The demo's state file it reads is `contracts/demo_state.py`; the status
endpoint and the counter names it interprets are `contracts/status.py`.
"""
