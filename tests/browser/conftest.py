"""Fixtures for the browser tests (marker `browser`): a real `l7scope server` per data set and one
headless Chromium per test module. Every page fails the test on an uncaught JavaScript error.

Module scope, not session scope: Playwright's sync API keeps an asyncio loop marked as running
while it is started, which would break the async tests that pytest runs after this directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from browser_data import big_graph_records, shop_records
from browser_support import CHROMIUM, CHROMIUM_ARGS, Server, chromium_available


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()
        pw.stop()


@pytest.fixture(scope="module")
def shop_server(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("shop"))
    try:
        srv.load(shop_records(int(time.time())))
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("big"))
    try:
        srv.load(big_graph_records(int(time.time())))
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def empty_server(tmp_path: Any, browser: Any) -> Iterator[Server]:
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp lets Playwright evaluate its helpers; it also means the escaping tests check the
    # page's own text handling, without help from the page's Content-Security-Policy.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"
