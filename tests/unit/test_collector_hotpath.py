"""The collector's fast paths give the same answers as the plain, line-by-line ways."""

from __future__ import annotations

import contextlib
import random

import pytest

from l7scope.collector.batch import Batcher
from l7scope.collector.decode import decode_block
from l7scope.contracts import latency
from l7scope.contracts.envoy_log import EnvoyLogLine, decode_line, decode_lines, encode_line
from l7scope.testing.envoy_lines import line as synth_line

GOOD = [encode_line(EnvoyLogLine(request_path=f"/{i}", duration=i)) for i in range(4)]


@pytest.mark.parametrize("block", [
    b"\n".join(GOOD) + b"\n",
    b"\n".join(GOOD),  # no newline at the end
    GOOD[0] + b"\n\n" + GOOD[1] + b"\n",  # an empty line
    GOOD[0] + b"\n   \n" + GOOD[1] + b"\n",  # a line of blanks
    GOOD[0] + b" " + GOOD[1] + b"\n" + GOOD[2] + b"\n",  # two objects on one line
    GOOD[0] + b"  \n" + GOOD[1] + b"\r\n",  # trailing blanks, CRLF
    GOOD[0] + b" " + GOOD[1] + b"\n\n" + GOOD[2] + b"\n",  # two on one line + an empty line
    GOOD[0] + b"\n[1]\n" + GOOD[1] + b"\n",  # not an object
    b"\n",
])
def test_decode_block_matches_line_by_line(block: bytes) -> None:
    body = block[:-1] if block.endswith(b"\n") else block
    expected = decode_lines(body.split(b"\n"))
    assert decode_block(block) == expected
    assert decode_block(block, block.count(b"\n") if block.endswith(b"\n") else None) == expected
    good = []
    for ln in body.split(b"\n"):
        if ln.strip():
            with contextlib.suppress(ValueError):
                good.append(decode_line(ln))
    assert expected[0] == good


@pytest.mark.parametrize("bad", [
    b'{"request_path": "/\xc0\xaf"}',  # overlong UTF-8
    b'{"request_method": "\xed\xa0\x80"}',  # a UTF-8-coded surrogate
    b'{"ignored": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # deeper than the recursion limit
])
def test_undecodable_line_is_counted_and_the_block_kept(bad: bytes) -> None:
    """These raised out of decode_block (the reader then dropped the whole block, uncounted)."""
    block = GOOD[0] + b"\n" + bad + b"\n" + GOOD[1] + b"\n"
    lines, n_bad = decode_block(block, 3)
    assert n_bad == 1 and [x.request_path for x in lines] == ["/0", "/1"]
    with pytest.raises(ValueError):
        decode_line(bad)


def _reference(lines: list[EnvoyLogLine]) -> tuple[dict[tuple[object, ...], list[int]],
                                                  dict[tuple[object, ...], dict[int, int]]]:
    """Per key: count, duration sum/max, latency sum, bytes, duration_us sum/max, histogram;
    one line at a time."""
    out: dict[tuple[object, ...], list[int]] = {}
    hists: dict[tuple[object, ...], dict[int, int]] = {}
    for ln in lines:
        k = (ln.downstream_remote_address, ln.request_path, ln.response_code)
        a = out.setdefault(k, [0, 0, 0, 0, 0, 0, 0, 0])
        d = ln.duration or 0
        us = ln.duration_us if ln.duration_us is not None else d * 1000
        try:
            lat = d - int(ln.upstream_service_time) if ln.upstream_service_time else 0
        except ValueError:
            lat = 0
        a[0] += 1
        a[1] += d
        a[2] = max(a[2], d)
        a[3] += lat
        a[4] += ln.bytes_sent or 0
        a[5] += ln.bytes_received or 0
        a[6] += us
        a[7] = max(a[7], us)
        latency.add(hists.setdefault(k, {}), us)
    for a in out.values():
        a[3] = max(a[3], 0)  # sent clipped at 0 per entry
    return out, hists


@pytest.mark.parametrize("compact_lines", [1, 7, 150_000])
def test_fold_with_nulls_and_odd_values_matches_reference(compact_lines: int) -> None:
    rng = random.Random(7)
    lines = []
    for i in range(3000):
        ln = synth_line(rng, connections=5, paths=2, i=i)
        r = rng.random()
        if r < 0.05:
            ln.duration = None
        elif r < 0.10:
            ln.duration_us = None
        elif r < 0.15:
            ln.upstream_service_time = rng.choice([None, "", "abc", "-"])
        elif r < 0.20:
            ln.bytes_sent = None
            ln.bytes_received = None
        elif r < 0.22:
            ln.duration_us = 10**9  # past the bucket table
        lines.append(ln)
    b = Batcher(compact_lines=compact_lines)
    for i in range(0, len(lines), 97):
        b.add(lines[i:i + 97])
    res = b.flush()
    ref, ref_hists = _reference(lines)
    got: dict[tuple[object, ...], list[int]] = {}
    got_hists: dict[tuple[object, ...], dict[int, int]] = {}
    for m in res.messages:
        src = f"{m.src_ip}:{m.src_port}"
        for hd in m.http_data:
            k = (src, hd.request_path, hd.response_code)
            a = got.setdefault(k, [0, 0, 0, 0, 0, 0, 0, 0])
            a[0] += hd.count
            a[1] += hd.duration
            a[2] = max(a[2], hd.duration_max)
            a[3] += hd.latency
            a[4] += hd.bytes_sent_total
            a[5] += hd.bytes_received_total
            a[6] += hd.duration_us_sum
            a[7] = max(a[7], hd.duration_us_max)
            assert k not in got_hists  # synth: (source, path, code) decides every key field
            got_hists[k] = dict(hd.duration_hist)
    assert got == ref
    assert got_hists == ref_hists
    assert res.requests == len(lines)
