"""parse_body's one-call path gives the same answer as the line-by-line path, and falls back to
it whenever a line is bad (so rejections keep their line numbers)."""

from __future__ import annotations

import pytest

from l7scope.contracts.record import L7Record, encode_record
from l7scope.server import ingest
from l7scope.server.ingest import _parse_fast, parse_body, parse_chunks

NOW = 1_790_000_000  # the server's time for parse_body (records here are older)


def _rec(i: int, **kw: object) -> L7Record:
    return L7Record(start_time=100 + i, end_time=105 + i, count=1 + i, url=f"svc:80/p{i}", **kw)  # type: ignore[arg-type]


def test_fast_path_decodes_every_line() -> None:
    recs = [_rec(i, duration_hist={"100": 2, "7": 1}) for i in range(50)]
    body = b"".join(encode_record(r) + b"\r\n" for r in recs) + b"\n  \n"
    fast = _parse_fast(body, NOW)
    assert fast is not None and fast.records == recs
    parsed = parse_body(body, NOW)
    assert parsed.records == recs and parsed.rejected == [] and parsed.rejected_total == 0


def test_bad_lines_fall_back_with_line_numbers() -> None:
    good = encode_record(_rec(1))
    cases = {
        b"{not json}": 2,
        encode_record(_rec(2, duration_hist={"x1": 1})): 2,  # bucket key not an index
        good + b"," + good: 2,  # two objects on one line
        b'{"url": "a': 2,  # cut line
    }
    for bad, line_no in cases.items():
        body = good + b"\n" + bad + b"\n" + good + b"\n"
        assert _parse_fast(body, NOW) is None, bad
        parsed = parse_body(body, NOW)
        assert len(parsed.records) == 2 and parsed.rejected_total == 1, bad
        assert parsed.rejected[0].line == line_no


def test_lines_that_only_parse_when_joined_are_rejected() -> None:
    # Each line alone is invalid; joined with a comma they would read as two records.
    body = b'{"url": "a\n' + b'b", "count": 1}\n'
    parsed = parse_body(body, NOW)
    assert parsed.records == [] and parsed.rejected_total == 2


def test_lines_that_only_parse_as_one_value_are_rejected() -> None:
    # Newline-separated, these two halves are one JSON object to a whitespace-tolerant decoder.
    halves = b'{"start_time": 100,\n"end_time": 105}\n'
    body = encode_record(_rec(1)) + b"\n" + halves
    assert _parse_fast(body, NOW) is None
    parsed = parse_body(body, NOW)
    assert len(parsed.records) == 1 and [r.line for r in parsed.rejected] == [2, 3]
    # Two records on one line and a line that is not an object.
    two = encode_record(_rec(2)) + b" " + encode_record(_rec(3))
    parsed = parse_body(encode_record(_rec(1)) + b"\n" + two + b"\n5\n", NOW)
    assert len(parsed.records) == 1 and [r.line for r in parsed.rejected] == [2, 3]


def test_pieces_keep_the_whole_body_line_numbers() -> None:
    lines = [encode_record(_rec(i)) for i in range(40)]
    for bad in (3, 17, 39):
        lines[bad] = b'{"start_time": "x"}'
    body = b"\n".join(lines) + b"\n"
    whole = parse_body(body, NOW)
    pieces = list(parse_chunks(body, NOW, chunk_bytes=500))
    assert len(pieces) > 5
    assert [r.line for p in pieces for r in p.rejected] == [r.line for r in whole.rejected] == [4, 18, 40]
    assert [r for p in pieces for r in p.records] == whole.records


def test_decoding_stops_after_the_rejected_line_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "MAX_REJECTED_LINES", 10)
    good = encode_record(_rec(1))
    body = b"\n".join([good] * 3 + [b"{}"] * 30 + [good] * 2) + b"\n"
    pieces = list(parse_chunks(body, NOW, chunk_bytes=200))
    assert sum(len(p.records) for p in pieces) == 3  # the two after the stop are not read
    assert sum(p.rejected_total for p in pieces) == 32
    listed = [r for p in pieces for r in p.rejected]
    assert [r.line for r in listed] == [*range(4, 14), 14]
    assert "not read" in listed[-1].error and "21 lines after it" in listed[-1].error
