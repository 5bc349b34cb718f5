"""`python -m bench [NAME ...]`: run the benchmarks and print one table.

Each `bench/bench_<name>.py` exposes `run(quick: bool) -> list[Row]`. A row names what was
measured, the measured value, the baseline measured in the same run (if any), the target and
whether it was met. Results are also written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.row import Row


def main() -> int:
    ap = argparse.ArgumentParser(prog="make bench", description=__doc__)
    ap.add_argument("names", nargs="*", help="only these benchmarks (e.g. collector server)")
    ap.add_argument("--quick", action="store_true", help="smaller data sets (smoke run)")
    args = ap.parse_args()
    here = Path(__file__).parent
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)])
                   if m.name.startswith("bench_"))
    if args.names:
        names = [n for n in names if n in args.names]
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows: list[Row] = []
    failed = False
    for name in names:
        console.print(f"[bold]bench {name}[/] ...")
        t0 = time.monotonic()
        try:
            rows += importlib.import_module(f"bench.bench_{name}").run(args.quick)
        except Exception:
            failed = True
            console.print(f"[red]bench {name} failed[/]\n{traceback.format_exc()}")
        console.print(f"  done in {time.monotonic() - t0:.1f} s")
    table = Table(title="l7scope benchmarks")
    for col in ("what", "measured", "baseline (same run)", "target", "met"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.what, r.measured, r.baseline, r.target,
                      "[green]yes[/]" if r.met else "[red]NO[/]" if r.met is False else "-")
    console.print(table)
    out = here / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
