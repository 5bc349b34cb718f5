"""`l7scope observe` on saved records: read jsonl, filter with the flags' selector (evaluated
locally), write jsonl / table. Baseline in the same run: decoding and re-encoding the same lines
with no filter (the floor of any jsonl pipe). No target in the design; the rows show the cost."""

from __future__ import annotations

import io
import time

import msgspec

from bench.row import Row
from l7scope.contracts.record import encode_records
from l7scope.observe import filters
from l7scope.observe.cli import read_records
from l7scope.observe.filters import FilterSpec
from l7scope.observe.printer import make_printer
from l7scope.testing import record_gen


def _best(fn: object, repeat: int = 3) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool) -> list[Row]:
    n = 50_000 if quick else 200_000
    topo = record_gen.topology(seed=1)
    data = encode_records(record_gen.records(topo, n, 1_790_000_000, 1_790_003_600, seed=2))
    dec = msgspec.json.Decoder(dict)
    enc = msgspec.json.Encoder()

    def baseline() -> None:
        out = io.StringIO()
        for line in io.BytesIO(data):
            out.write(enc.encode(dec.decode(line)).decode())
            out.write("\n")

    spec = FilterSpec({"namespace": ("shop",), "http-status": ("5+", "404")},
                      {"http-path": ("/healthz",)})
    match = filters.compile_selector(filters.to_selector(spec))

    def filtered(fmt: str) -> int:
        out = io.StringIO()
        printer = make_printer(fmt, out, io.StringIO(), color=False, width=120)
        printer.start()
        kept = 0
        batch = []
        for r in read_records(io.BytesIO(data)):
            if match(r):
                batch.append(r)
                if len(batch) >= 500:
                    printer.records(batch)
                    kept += len(batch)
                    batch = []
        printer.records(batch)
        return kept + len(batch)

    def everything(fmt: str) -> None:
        out = io.StringIO()
        printer = make_printer(fmt, out, io.StringIO(), color=False, width=120)
        printer.start()
        recs = list(read_records(io.BytesIO(data)))
        printer.records(recs)

    base = _best(baseline)
    filt = _best(lambda: filtered("jsonl"))
    table = _best(lambda: everything("table"), repeat=1)
    kept = filtered("jsonl")
    return [
        Row(f"observe - (jsonl in, 3 filters + --not, jsonl out; {kept} of {n} kept)",
            f"{n / filt:,.0f} records/s", f"decode+encode only: {n / base:,.0f} records/s "
            f"({base / filt:.2f}x)"),
        Row(f"observe - -o table (every record printed, {n})", f"{n / table:,.0f} records/s"),
    ]
