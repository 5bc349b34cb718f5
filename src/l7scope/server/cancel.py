"""Cancelling a running query: a statement timeout, and the client going away.

`run_cancellable()` runs a blocking query function in a worker thread with a `CancelToken` in a
context variable (anyio copies it into the thread). A store registers how to stop its engine
(`on_cancel(cursor.interrupt)` for DuckDB) while a statement runs; when the deadline passes or
`disconnected()` says the client left, the token calls those hooks and the query ends with
`QueryCancelled`. ClickHouse bounds its statements itself (`max_execution_time`).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import anyio.to_thread

T = TypeVar("T")

#: How often a running query checks whether its client is still connected.
POLL_S: Final = 0.2
#: After cancelling, how long to wait for the engine to stop before answering anyway.
GRACE_S: Final = 2.0


class QueryCancelled(Exception):
    """A query was stopped: `reason` is "timeout" or "disconnected"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CancelToken:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], object]] = []
        self.reason: str | None = None

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    def check(self) -> None:
        if self.reason is not None:
            raise QueryCancelled(self.reason, f"query cancelled ({self.reason})")

    @contextmanager
    def registered(self, hook: Callable[[], object]) -> Iterator[None]:
        with self._lock:
            self._hooks.append(hook)
        try:
            self.check()  # cancelled before the statement started
            yield
        finally:
            with self._lock:
                self._hooks.remove(hook)


_current: Final[contextvars.ContextVar[CancelToken | None]] = contextvars.ContextVar(
    "l7scope_cancel", default=None)


def current() -> CancelToken | None:
    return _current.get()


@contextmanager
def on_cancel(hook: Callable[[], object]) -> Iterator[CancelToken | None]:
    """Call `hook` (from another thread) if the running query is cancelled meanwhile."""
    token = _current.get()
    if token is None:
        yield None
        return
    with token.registered(hook):
        yield token


async def run_cancellable(fn: Callable[[], T], timeout_s: float,
                          disconnected: Callable[[], Awaitable[bool]]) -> T:
    """fn() in a worker thread; QueryCancelled when it runs over `timeout_s` or the client
    disconnects (its engine is interrupted through the hooks it registered)."""
    token = CancelToken()
    ctx_token = _current.set(token)
    try:
        task = asyncio.ensure_future(anyio.to_thread.run_sync(fn))  # copies the context
    finally:
        _current.reset(ctx_token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, min(POLL_S, deadline - loop.time())))
        if done:
            break
        if loop.time() >= deadline:
            token.cancel("timeout")
        elif await disconnected():
            token.cancel("disconnected")
        if token.reason is not None:
            await asyncio.wait({task}, timeout=GRACE_S)
            break
    if token.reason is not None:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the engine's "interrupted" error is the expected end
        else:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        what = (f"the query ran over the {timeout_s:g} s statement timeout" if token.reason == "timeout"
                else "the client disconnected")
        raise QueryCancelled(token.reason, f"{what}; it was cancelled")
    return task.result()
