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

# name -> "module:attribute" of a click command, with a one-line summary for --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("l7scope.demo.cli:demo", "Run a whole shop on this machine and show its traffic."),
    "collector": ("l7scope.collector.cli:collector", "Tail Envoy's access log and report to the node agent."),
    "node": ("l7scope.node.cli:node", "Node agent: Policy Sync server, capture rules, enrich, aggregate, ship."),
    "server": ("l7scope.server.cli:server", "Store L7 records and serve the query API and web page."),
    "observe": ("l7scope.observe.cli:observe", "Show L7 records from the server, with filters (like hubble observe)."),
    "export": ("l7scope.observe.export:export", "Write the L7 records of a time range to a Parquet or JSON-lines file."),
    "top": ("l7scope.observe.top:top", "Live table of the busiest edges or routes."),
    "status": ("l7scope.status.cli:status", "Health and counters of every part."),
    "operator": ("l7scope.operator.cli:operator", "Kubernetes operator for the ApplicationLayer resource."),
    "envoy-config": ("l7scope.proxy.cli:envoy_config", "Print the Envoy configuration l7scope runs."),
}


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
            if e.name and module_name.startswith(e.name):
                return _unavailable(cmd_name, target[1])
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, summary: str) -> click.Command:
    @click.command(name=name, help=f"{summary}\n\n(Not available in this build.)")
    def cmd() -> None:
        raise click.ClickException(f"`l7scope {name}` is not available in this build yet")

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
