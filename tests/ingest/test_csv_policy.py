"""One column policy for every CSV, and physical ranges (issue 11.5).

Policy (gazeprep.datasets.csvio docstring, README "Input data"): a header with a column missing,
a column twice, or a column not in the file's documented format rejects the whole file, naming
the file and the column. A per-case file then becomes a rejects row (that case or table skipped, the
rest goes on); a release-wide file stops the ingest with that one error. Values outside their
physical range are row errors naming the file, the 1-based row and the column.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from ingest_fixtures import (
    EGD_GAZE_HEADER,
    FIX_HEADER,
    FIX_ROWS,
    GAZE_HEADER,
    crlf,
    write_egd,
    write_mimic,
    write_reflacx,
)

from gazeprep.datasets import get_adapter, mimic
from gazeprep.datasets.csvio import Col, read_checked_csv, scan_checked_csv
from gazeprep.errors import InputFormatError

C1, C2 = "P102R000001", "P201R000002"
COLS = {"t": Col(), "v": Col(required=False, gt=0)}


def _write(p: Path, lines: list[str]) -> Path:
    p.write_bytes(crlf(lines))
    return p


def _add_column(path: Path, name: str = "note", value: str = "x") -> None:
    """Append a column to every line of a CSV (header gets ``name``)."""
    raw = path.read_bytes()
    gz = path.name.endswith(".gz")
    text = (gzip.decompress(raw) if gz else raw).decode()
    eol = "\r\n" if "\r\n" in text else "\n"
    lines = [ln for ln in text.split(eol) if ln]
    out = eol.join([lines[0] + f",{name}", *[ln + f",{value}" for ln in lines[1:]]]) + eol
    path.write_bytes(gzip.compress(out.encode()) if gz else out.encode())


# ----------------------------------------------------------------------------- the reader itself
@pytest.mark.parametrize("reader", [read_checked_csv, scan_checked_csv])
def test_unknown_column_rejects_the_file_naming_it(tmp_path, reader):
    p = _write(tmp_path / "f.csv", ["t,v,extra", "1.0,2.0,a"])
    with pytest.raises(InputFormatError) as exc:
        reader(p, COLS)
    e = exc.value
    assert e.path == str(p) and e.column == "extra" and e.row is None
    assert "unexpected column(s) ['extra']" in str(e)
    # the same column declared as known (documented, not read) is accepted and not returned
    t = reader(p, COLS, known=("extra",))
    assert t.df.columns == ["source_row", "t", "v"] and t.bad == []


@pytest.mark.parametrize(
    "header, column, needle",
    [
        ("t,v,v", "v", "duplicate column(s) ['v']"),
        ("t,k,k,v", "k", "duplicate column(s) ['k']"),  # a known column twice too
        ("t,k", "v", "missing column(s) ['v']"),
        (",t,v", "", "unexpected column(s) ['']"),  # a pandas index column without a name
    ],
)
def test_other_header_defects_reject_the_file(tmp_path, header, column, needle):
    n = header.count(",") + 1
    p = _write(tmp_path / "f.csv", [header, ",".join(["1.0"] * n)])
    with pytest.raises(InputFormatError) as exc:
        read_checked_csv(p, COLS, known=("k",))
    assert exc.value.column == column and needle in str(exc.value)


@pytest.mark.parametrize("reader", [read_checked_csv, scan_checked_csv])
@pytest.mark.parametrize(
    "value, needle",
    [
        ("-1", "must be greater than 0: '-1'"),
        ("0", "must be greater than 0: '0'"),
        ("nan", "value is NaN"),
        ("inf", "value is infinite"),
        ("-inf", "value is infinite"),
        ("abc", "not a number"),
    ],
)
def test_exclusive_lower_bound_and_finiteness(tmp_path, reader, value, needle):
    p = _write(tmp_path / "f.csv", ["t,v", "1.0,1.1", f"2.0,{value}", "3.0,", "4.0,0.001"])
    t = reader(p, COLS)
    assert [b.row for b in t.bad] == [2]
    assert t.bad[0].reason.startswith("column 'v': ") and needle in t.bad[0].reason
    assert t.df["source_row"].to_list() == [1, 3, 4]  # an empty optional value is null, not an error
    assert t.df["v"].to_list() == [1.1, None, 0.001]


# ----------------------------------------------------------------------------- REFLACX file kinds
@pytest.fixture
def rx(tmp_path) -> Path:
    root = tmp_path / "reflacx"
    write_reflacx(root)
    return root


def _rx_open(root: Path, **kw):
    return get_adapter("reflacx").open(root, **kw)


def test_reflacx_documented_headers_are_accepted(rx):
    rel = _rx_open(rx, gaze_samples=True)
    assert GAZE_HEADER.count(",") + 1 == 16  # gaze.csv has all 16 documented columns, 5 of them read
    cd = rel.read_case(C1)
    assert cd.tables["fixations"].height == 3 and cd.tables["gaze_samples"].height == 5
    assert not [r for r in cd.rejects if "column" in r["reason"]]


def test_reflacx_metadata_extra_column_stops_the_ingest(rx):
    path = rx / "main_data" / "metadata_phase_2.csv"
    _add_column(path, "comments")
    with pytest.raises(InputFormatError) as exc:
        _rx_open(rx)
    assert exc.value.path == str(path) and exc.value.column == "comments"
    assert "unexpected column(s) ['comments']" in str(exc.value)


@pytest.mark.parametrize(
    "rel_path, kwargs, outcome, table",
    [
        ("main_data/{cid}/fixations.csv", {}, "case skipped", "fixations"),
        ("gaze_data/{cid}/gaze.csv", {"gaze_samples": True}, "gaze samples left empty", "gaze_samples"),
        ("main_data/{cid}/timestamps_transcription.csv", {}, "reports and words left empty", "words"),
        ("main_data/{cid}/anomaly_location_ellipses.csv", {}, "ellipses left empty", "ellipses"),
    ],
)
def test_reflacx_per_case_file_with_extra_column_is_a_reject(rx, rel_path, kwargs, outcome, table):
    path = rx / rel_path.format(cid=C1)
    _add_column(path, "zoom_level", "1.0")
    rel = _rx_open(rx, **kwargs)
    cd = rel.read_case(C1)
    hits = [r for r in cd.rejects if r["file"] == rel_path.format(cid=C1)]
    assert len(hits) == 1, cd.rejects
    r = hits[0]
    assert r["case_id"] == C1 and r["row"] is None
    assert "unexpected column(s) ['zoom_level']" in r["reason"] and r["reason"].endswith(outcome)
    assert cd.tables[table].height == 0
    # the other case goes on untouched
    other = rel.read_case(C2)
    assert other.tables[table].height > 0 or table == "ellipses"
    assert not [x for x in other.rejects if "unexpected column" in x["reason"]]


@pytest.mark.parametrize(
    "pupil, needle",
    [
        ("-1", "must be greater than 0: '-1'"),
        ("0", "must be greater than 0"),
        ("nan", "value is NaN"),
        ("inf", "value is infinite"),
        ("1e999", "value is infinite"),
    ],
)
def test_reflacx_pupil_area_out_of_range_drops_the_row(rx, pupil, needle):
    rows = list(FIX_ROWS)
    parts = rows[1].split(",")
    parts[4] = pupil  # pupil_area_normalized
    rows[1] = ",".join(parts)
    _write(rx / "main_data" / C1 / "fixations.csv", [FIX_HEADER, *rows])
    cd = _rx_open(rx).read_case(C1)
    bad = [r for r in cd.rejects if r["file"] == f"main_data/{C1}/fixations.csv"]
    assert len(bad) == 1
    assert bad[0]["row"] == 2 and bad[0]["case_id"] == C1
    assert "column 'pupil_area_normalized'" in bad[0]["reason"] and needle in bad[0]["reason"]
    assert bad[0]["reason"].endswith("row dropped")
    assert cd.tables["fixations"]["source_row"].to_list() == [1, 3]  # the rest goes on


@pytest.mark.parametrize(
    "index, value, column",
    [
        (7, "0", "window_width"),
        (7, "-0.5", "window_width"),
        (2, "nan", "x_position"),
        (1, "inf", "timestamp_end_fixation"),
        (10, "-inf", "ymin_shown_from_image"),
    ],
)
def test_reflacx_other_fixation_ranges(rx, index, value, column):
    rows = list(FIX_ROWS)
    parts = rows[0].split(",")
    parts[index] = value
    rows[0] = ",".join(parts)
    _write(rx / "main_data" / C1 / "fixations.csv", [FIX_HEADER, *rows])
    cd = _rx_open(rx).read_case(C1)
    bad = [r for r in cd.rejects if r["file"] == f"main_data/{C1}/fixations.csv"]
    assert [(r["row"], f"column '{column}'" in r["reason"]) for r in bad] == [(1, True)]
    assert cd.tables["fixations"]["source_row"].to_list() == [2, 3]


def test_reflacx_gaze_pixels_per_degree_must_be_positive(rx):
    gpath = rx / "gaze_data" / C1 / "gaze.csv"
    lines = gpath.read_bytes().decode().split("\r\n")
    parts = lines[1].split(",")
    parts[4] = "0"  # angular_resolution_x_pixels_per_degree
    lines[1] = ",".join(parts)
    gpath.write_bytes("\r\n".join(lines).encode())
    cd = _rx_open(rx, gaze_samples=True).read_case(C1)
    bad = [r for r in cd.rejects if r["file"] == f"gaze_data/{C1}/gaze.csv"]
    assert len(bad) == 1 and bad[0]["row"] == 1
    assert "column 'angular_resolution_x_pixels_per_degree': must be greater than 0" in bad[0]["reason"]
    assert cd.tables["gaze_samples"].height == 4


# ----------------------------------------------------------------------------- EGD-CXR file kinds
@pytest.fixture
def egd(tmp_path) -> tuple[Path, dict]:
    ids = write_egd(tmp_path / "egd")
    return tmp_path / "egd", ids


def test_egd_documented_headers_are_accepted(egd):
    root, ids = egd
    assert EGD_GAZE_HEADER.count(",") + 1 == 37
    rel = get_adapter("egd-cxr").open(root, gaze_samples=True)
    cd = rel.read_case(ids["landscape"])
    assert cd.tables["fixations"].height == 2 and cd.tables["boxes"].height == 1
    assert not [r for r in rel.rejects + cd.rejects if "unexpected column" in r["reason"]]


@pytest.mark.parametrize("name", ["master_sheet.csv", "fixations.csv"])
def test_egd_release_wide_file_with_extra_column_stops_the_ingest(egd, name):
    root, _ = egd
    _add_column(root / name, "reader_notes")
    with pytest.raises(InputFormatError) as exc:
        get_adapter("egd-cxr").open(root)
    assert exc.value.path == str(root / name) and exc.value.column == "reader_notes"


@pytest.mark.parametrize(
    "name, kwargs, outcome",
    [
        ("eye_gaze.csv", {"gaze_samples": True}, "gaze samples left empty"),
        ("bounding_boxes.csv", {}, "boxes left empty"),
    ],
)
def test_egd_optional_file_with_extra_column_is_a_reject(egd, name, kwargs, outcome):
    root, ids = egd
    _add_column(root / name, "reader_notes")
    rel = get_adapter("egd-cxr").open(root, **kwargs)
    hits = [r for r in rel.rejects if r["file"] == name]
    assert len(hits) == 1
    assert "unexpected column(s) ['reader_notes']" in hits[0]["reason"] and hits[0]["reason"].endswith(outcome)
    assert rel.read_case(ids["landscape"]).tables["fixations"].height == 2  # the rest goes on


def test_egd_non_finite_fraction_drops_the_row(egd):
    root, ids = egd
    text = (root / "fixations.csv").read_text()
    lines = text.splitlines()
    d2_rows = [i for i, ln in enumerate(lines) if ids["landscape"] in ln]
    parts = lines[d2_rows[0]].split(",")
    parts[6] = "nan"  # FPOGX
    lines[d2_rows[0]] = ",".join(parts)
    (root / "fixations.csv").write_text("\n".join(lines) + "\n")
    rel = get_adapter("egd-cxr").open(root)
    bad = [r for r in rel.rejects if r["file"] == "fixations.csv" and r["row"] == d2_rows[0]]
    assert len(bad) == 1 and "column 'FPOGX': value is NaN" in bad[0]["reason"]
    assert bad[0]["case_id"] == ids["landscape"]
    assert rel.read_case(ids["landscape"]).tables["fixations"].height == 1


# ----------------------------------------------------------------------------- MIMIC tables
@pytest.mark.parametrize(
    "kind, read", [("metadata", mimic.read_metadata), ("split", mimic.read_split), ("chexpert", mimic.read_chexpert)]
)
def test_mimic_tables_follow_the_same_rule(tmp_path, kind, read):
    write_mimic(tmp_path, [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 10000032, 50414267, 3056, 2544)])
    path = mimic.find_table(tmp_path, kind)
    assert read(tmp_path).height == 1
    _add_column(path, "extra")
    with pytest.raises(InputFormatError) as exc:
        read(tmp_path)
    assert exc.value.path == str(path) and exc.value.column == "extra"
