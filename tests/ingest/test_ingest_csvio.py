"""Checked CSV reading: headers, typed columns, bad rows named by their 1-based data row."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from gazeprep.datasets.checks import ordered_keep_mask, time_problems
from gazeprep.datasets.csvio import Col, read_checked_csv, scan_checked_csv
from gazeprep.errors import InputFormatError

COLS = {"t": Col(), "n": Col("int", lo=0, hi=5), "flag": Col("bool"), "name": Col("str"), "opt": Col(required=False)}
GOOD = ["t,n,flag,name,opt", "0.5,5,True,a,", "1.5,5.0,False,b,2.5", '2.0,0,True,"c, d",1']


def write(tmp_path: Path, lines: list[str], name: str = "f.csv", eol: str = "\r\n") -> Path:
    p = tmp_path / name
    p.write_bytes((eol.join(lines) + eol).encode())
    return p


@pytest.mark.parametrize("reader", [read_checked_csv, scan_checked_csv])
def test_good_file_typed(tmp_path, reader):
    t = reader(write(tmp_path, GOOD), COLS)
    assert t.bad == []
    assert t.df["source_row"].to_list() == [1, 2, 3]
    assert t.df["n"].to_list() == [5.0, 5.0, 0.0]  # "5" and "5.0" both accepted
    assert t.df["flag"].to_list() == [True, False, True]
    assert t.df["name"].to_list() == ["a", "b", "c, d"]
    assert t.df["opt"].to_list() == [None, 2.5, 1.0]


def test_gzip_and_lf_endings(tmp_path):
    p = tmp_path / "f.csv.gz"
    p.write_bytes(gzip.compress(("\n".join(GOOD) + "\n").encode()))
    assert read_checked_csv(p, COLS).df.height == 3


@pytest.mark.parametrize("reader", [read_checked_csv, scan_checked_csv])
@pytest.mark.parametrize(
    "row, needle",
    [
        ("abc,1,True,x,", "column 't': not a number: 'abc'"),
        ("nan,1,True,x,", "column 't': value is NaN"),
        ("inf,1,True,x,", "column 't': value is infinite"),
        ("1.0,7,True,x,", "column 'n': out of range [0, 5]: '7'"),
        ("1.0,2.5,True,x,", "column 'n': not an integer: '2.5'"),
        ("1.0,1,maybe,x,", "column 'flag': not a boolean: 'maybe'"),
        ("1.0,1,True,,", "column 'name': empty value"),
        ("1.0,1,True", "column 'name': empty value"),  # truncated row: missing trailing fields
    ],
)
def test_bad_value_names_row_and_column(tmp_path, reader, row, needle):
    lines = GOOD[:2] + [row] + GOOD[2:]
    t = reader(write(tmp_path, lines), COLS)
    assert [b.row for b in t.bad] == [2]
    assert needle in t.bad[0].reason
    assert t.df["source_row"].to_list() == [1, 3, 4]  # the good rows survive


def test_too_many_fields_and_blank_line(tmp_path):
    lines = GOOD[:2] + ["1.0,1,True,x,3,EXTRA", ""] + GOOD[2:]
    t = read_checked_csv(write(tmp_path, lines), COLS)
    assert [(b.row, b.reason) for b in t.bad] == [
        (2, "has 6 fields, the header has 5 (truncated or malformed row)"),
        (3, "blank line"),
    ]
    assert t.df["name"].to_list() == ["a", "b", "c, d"]


def test_file_truncated_inside_quoted_field(tmp_path):
    p = tmp_path / "f.csv"
    p.write_bytes(("\r\n".join(GOOD) + '\r\n3.0,1,True,"unterminated').encode())
    t = read_checked_csv(p, COLS)
    assert t.df.height == 3
    assert t.bad[0].row == 4 and "cannot parse the row" in t.bad[0].reason


def test_wrong_header_is_file_error(tmp_path):
    p = write(tmp_path, ["t,n,flags,name,opt", "1,1,True,a,"])
    with pytest.raises(InputFormatError) as e:
        read_checked_csv(p, COLS)
    assert str(p) in str(e.value) and "missing column(s) ['flag']" in str(e.value)


def test_empty_and_binary_files(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    with pytest.raises(InputFormatError, match="empty file"):
        read_checked_csv(p, COLS)
    b = tmp_path / "bin.csv"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    with pytest.raises(InputFormatError) as e:
        read_checked_csv(b, COLS)
    assert "bin.csv" in str(e.value)
    with pytest.raises(InputFormatError, match="file not found"):
        read_checked_csv(tmp_path / "nope.csv", COLS)


def test_aliases_accept_old_names(tmp_path):
    p = write(tmp_path, ["a_old,b", "1,2"])
    t = read_checked_csv(p, {"a": Col(), "b": Col()}, aliases={"a_old": "a"})
    assert t.df["a"].to_list() == [1.0]


def test_header_only_gives_empty_frame(tmp_path):
    t = read_checked_csv(write(tmp_path, [GOOD[0]]), COLS)
    assert t.df.height == 0 and t.bad == [] and "source_row" in t.df.columns


# ---- time checks ---------------------------------------------------------------------------
def _brute_lnds(t: list[float]) -> int:
    best = [1] * len(t)
    for i in range(len(t)):
        for j in range(i):
            if t[j] <= t[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best) if t else 0


def test_ordered_keep_mask_is_a_longest_sorted_subsequence():
    rng = np.random.default_rng(0)
    for _ in range(200):
        t = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        keep = ordered_keep_mask(t)
        kept = t[keep]
        assert np.all(np.diff(kept) >= 0)
        assert keep.sum() == _brute_lnds(t.tolist())


def test_single_wild_timestamp_drops_one_row():
    import polars as pl

    df = pl.DataFrame(
        {"s": [1.0, 2.0, 999.0, 4.0, 5.0], "e": [1.5, 2.5, 1000.0, 4.5, 5.5], "source_row": [1, 2, 3, 4, 5]}
    )
    kept, bad = time_problems(df, "s", "e", start_label="start", end_label="end")
    assert bad == [(3, "timestamps out of order: start 999 is earlier than the rows that follow")] or (
        [r for r, _ in bad] == [3] and "start 999" in bad[0][1]
    )
    assert kept["source_row"].to_list() == [1, 2, 4, 5]


def test_swapped_pair_drops_the_later_row_and_negative_duration():
    import polars as pl

    df = pl.DataFrame({"s": [1.0, 3.0, 2.0, 4.0, 6.0], "e": [1.5, 3.5, 2.5, 3.0, 6.5], "source_row": [1, 2, 3, 4, 5]})
    kept, bad = time_problems(df, "s", "e", start_label="start", end_label="end")
    assert bad == [
        (3, "timestamps out of order: start 2 is earlier than row 2 (3)"),
        (4, "negative duration: end 3 is before start 4"),
    ]
    assert kept["source_row"].to_list() == [1, 2, 5]


def test_utf8_bom_and_lf_line_endings(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + ("\n".join(GOOD) + "\n").encode())
    t = read_checked_csv(p, COLS)
    assert t.bad == [] and t.df["t"].to_list() == [0.5, 1.5, 2.0]


# ---- property: anything the csv module writes in the declared kinds reads back exactly ---------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_row = st.tuples(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(0, 5),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8).filter(
        lambda s: s.strip() == s and s
    ),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_row, min_size=1, max_size=20), st.sampled_from(["\r\n", "\n"]))
def test_written_values_read_back_exactly(tmp_path_factory, rows, eol):
    import csv
    import io

    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator=eol)
    w.writerow(list(COLS))
    for t, n, flag, name, opt in rows:
        w.writerow([repr(t), n, flag, name, "" if opt is None else repr(opt)])
    p = tmp_path_factory.mktemp("prop") / "f.csv"
    p.write_bytes(buf.getvalue().encode())
    got = read_checked_csv(p, COLS)
    assert got.bad == []
    assert got.df.select("t", "n", "flag", "name", "opt").rows() == [(t, float(n), f, s, o) for t, n, f, s, o in rows]
