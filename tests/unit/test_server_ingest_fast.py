"""parse_body's one-call path gives the same answer as the line-by-line path, and falls back to
it whenever a line is bad (so rejections keep their line numbers)."""

from __future__ import annotations

from l7scope.contracts.record import L7Record, encode_record
from l7scope.server.ingest import _parse_fast, parse_body

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
