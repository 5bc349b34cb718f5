"""`l7scope` command line: the root group. Each subcommand lives in its component's own `cli`
module and is imported only when used, so `l7scope --help` stays fast and a broken optional
component cannot break the others.
"""

from __future__ import annotations

import importlib
import logging
import os

import click

from l7scope import __version__

# name -> ("module:attribute" of a click command, one-line summary for --help, the extra that
# installs what it needs: `pip install 'l7scope[EXTRA]'`; None: the base package).
SUBCOMMANDS: dict[str, tuple[str, str, str | None]] = {
    "demo": ("l7scope.demo.cli:demo", "Run a whole shop on this machine and show its traffic.", "demo"),
    "collector": ("l7scope.collector.cli:collector", "Tail Envoy's access log and report to the node agent.", "node"),
    "node": ("l7scope.node.cli:node", "Node agent: Policy Sync server, capture rules, enrich, aggregate, ship.", "node"),
    "server": ("l7scope.server.cli:server", "Store L7 records and serve the query API and web page.", "server"),
    "observe": ("l7scope.observe.cli:observe", "Show L7 records from the server, with filters (like hubble observe).", None),
    "export": ("l7scope.observe.export:export", "Write the L7 records of a time range to a Parquet or JSON-lines file.", None),
    "top": ("l7scope.observe.top:top", "Live table of the busiest edges or routes.", None),
    "status": ("l7scope.status.cli:status", "Health and counters of every part.", None),
    "dashboard": ("l7scope.observe.dashboard:dashboard", "Open the cluster's Service Graph page, logged in (port-forward).", None),
    "operator": ("l7scope.operator.cli:operator", "Kubernetes operator for the ApplicationLayer resource.", "operator"),
    "envoy-config": ("l7scope.proxy.cli:envoy_config", "Print the Envoy configuration l7scope runs.", "node"),
}


class MissingExtra(click.ClickException):
    """A command's third-party module is not installed: name the extra that brings it."""

    exit_code = 2

    def __init__(self, command: str, extra: str | None, module: str) -> None:
        hint = (f"install it with: pip install 'l7scope[{extra}]'" if extra else
                "reinstall l7scope (pip install --force-reinstall l7scope)")
        super().__init__(f"`l7scope {command}` needs the Python module {module!r}, which is not "
                         f"installed; {hint}")


def _third_party(e: ModuleNotFoundError) -> str | None:
    """The missing top-level module when it is not l7scope's own (a missing extra)."""
    top = (e.name or "").split(".")[0]
    return top if top and top != "l7scope" else None


def _guard(name: str, command: click.Command, extra: str | None) -> click.Command:
    inner = command.invoke

    def invoke(ctx: click.Context) -> object:
        try:
            return inner(ctx)
        except ModuleNotFoundError as e:
            module = _third_party(e)
            if module is None:
                raise
            raise MissingExtra(name, extra, module) from None

    command.invoke = invoke  # type: ignore[method-assign]
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            missing = _third_party(e)
            if missing is None:
                raise
            return _unavailable(cmd_name, target[1], target[2], missing)
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return _guard(cmd_name, command, target[2])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, summary: str, extra: str | None, module: str) -> click.Command:
    need = f"pip install 'l7scope[{extra}]'" if extra else "a complete install"

    @click.command(name=name, help=f"{summary}\n\n(Not installed: needs {need}.)",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd() -> None:
        raise MissingExtra(name, extra, module)

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="l7scope")
@click.option(
    "--log-level",
    default=lambda: os.environ.get("L7SCOPE_LOG_LEVEL", "info"),
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    show_default="info (env L7SCOPE_LOG_LEVEL)",
    help="Log verbosity of the process.",
)
def main(log_level: str) -> None:
    """l7scope: Layer-7 (HTTP) visibility for Kubernetes pod traffic.

    \b
    First run:  l7scope demo          (a shop of services on this machine)
    In a cluster: see docs/install.md (ApplicationLayer + annotate Services)
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
