"""Fixtures of the CLI tests: one real server per session, loaded with `cli_support.dataset()`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cli_support import Loaded, dataset, start_server, stop

from l7scope.contracts.record import to_dict


@pytest.fixture(scope="session")
def loaded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp("cli-server")
    srv = start_server(tmp)
    try:
        base = (int(time.time()) - 3600) // 5 * 5
        recs = dataset(base)
        for i in range(0, len(recs), 500):
            assert srv.ingest(recs[i:i + 500], f"cli-test-{i}") == len(recs[i:i + 500])
        yield Loaded(srv, base, [to_dict(r) for r in recs])
    finally:
        stop(srv.proc)


@pytest.fixture
def env_server(loaded_server: Loaded, monkeypatch: pytest.MonkeyPatch) -> Loaded:
    monkeypatch.setenv("L7SCOPE_SERVER", loaded_server.server.url)
    monkeypatch.setenv("L7SCOPE_TOKEN", loaded_server.server.token)
    return loaded_server


