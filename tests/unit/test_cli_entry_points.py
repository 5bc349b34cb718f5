"""The console scripts in pyproject.toml: `l7scope` and the kubectl plugin `kubectl-l7scope`
(kubectl runs any `kubectl-NAME` on PATH as `kubectl NAME`) name the same click group."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import click
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]


def test_kubectl_plugin_is_the_same_cli() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-l7scope"] == scripts["l7scope"] == "l7scope.cli:main"
    module, attr = scripts["kubectl-l7scope"].split(":")
    main = getattr(importlib.import_module(module), attr)
    assert isinstance(main, click.Group)
    res = CliRunner().invoke(main, ["status", "--help"], prog_name="kubectl l7scope")
    assert res.exit_code == 0 and "--context" in res.output and "-n, --namespace" in res.output
