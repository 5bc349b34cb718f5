"""`gc_paused()`: no cyclic garbage collection while a request builds many short-lived objects.

Decoding a bulk body (a record and its histogram dict per line) and building a service-graph
answer (tens of thousands of tuples and dicts) allocate enough containers to trigger collector
passes that walk every tracked object of the process; with 200k live records those passes
tripled the decode time and cost a third of the graph's build. None of these objects form
cycles, so reference counting still frees them all; only the cyclic collector waits until its
next threshold. Process-wide and nesting-safe: the collector is switched back on only by the
request that switched it off, so overlapping requests leave it as they found it (a request may
see it paused or not; either is correct).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
