"""REFLACX adapter: format quirks and every bad-input kind on a hand-written 3-case release."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from ingest_fixtures import FIX_HEADER, FIX_ROWS, crlf, write_reflacx

from gazeprep import schema
from gazeprep.datasets import get_adapter
from gazeprep.errors import GazeprepError, InputFormatError

C1, C2, C3 = "P102R000001", "P201R000002", "P300R000003"


@pytest.fixture
def rx(tmp_path) -> Path:
    root = tmp_path / "reflacx"
    write_reflacx(root)
    return root


def open_(root: Path, **kw):
    return get_adapter("reflacx").open(root, **kw)


def rejects_of(rows: list[dict], case_id: str | None = None) -> list[dict]:
    return [r for r in rows if case_id is None or r["case_id"] == case_id]


def set_fix_rows(root: Path, case_id: str, rows: list[str]) -> Path:
    p = root / "main_data" / case_id / "fixations.csv"
    p.write_bytes(crlf([FIX_HEADER, *rows]))
    return p


# ---- quirks ---------------------------------------------------------------------------------
def test_cases_table(rx):
    rel = open_(rx)
    schema.validate(rel.cases, "cases")
    c = {r["case_id"]: r for r in rel.cases.iter_rows(named=True)}
    assert set(c) == {C1, C2, C3}
    assert c[C1]["study_id"] == 50414267 and c[C1]["subject_id"] == 10000032  # study from the image path
    assert c[C1]["image_path"].startswith("physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000032/s50414267/")
    assert (c[C1]["image_height_px"], c[C1]["image_width_px"]) == (3056, 2544)
    assert [c[k]["phase"] for k in (C1, C2, C3)] == [1, 2, 3]
    assert c[C3]["discarded"] is True and c[C1]["discarded"] is False
    assert (c[C1]["chest_xmin_px"], c[C1]["chest_ymax_px"]) == (381.0, 2441.0)
    assert rel.rejects == []


def test_labels_per_phase_and_encodings(rx):
    lab = open_(rx).case_labels
    schema.validate(lab, "case_labels")
    get = {(r["case_id"], r["source_label"]): r for r in lab.iter_rows(named=True)}
    assert get[(C1, "Atelectasis")]["value"] == 3.0
    assert get[(C1, "Pleural effusion")]["value"] == 5.0
    assert get[(C2, "Pneumothorax")]["value"] == 5.0  # written as 5.0
    assert get[(C1, "Support devices")]["value"] == 1.0 and get[(C2, "Support devices")]["value"] == 0.0
    assert get[(C1, "Other")]["text"] == "scoliosis|hernia" and get[(C1, "Other")]["value"] is None
    assert get[(C2, "Other")]["text"] is None
    assert (C1, "Quality issue") in get and (C2, "Quality issue") not in get  # phase 1 only
    assert lab.filter(pl.col("case_id") == C1).height == 18
    assert lab.filter(pl.col("case_id") == C2).height == 16
    assert set(lab["source"]) == {"reflacx_metadata"}


def test_case_tables(rx):
    rel = open_(rx, gaze_samples=True)
    cd = rel.read_case(C1)
    assert cd.rejects == []
    for name, df in cd.tables.items():
        schema.validate(df, name)
    fx = cd.tables["fixations"]
    assert fx["t_start_s"].to_list() == [7.08, 7.4, 8.0]
    assert fx["x_px"].to_list() == [405.0, 1200.0, -150.0]
    assert fx["in_image"].to_list() == [True, True, False]  # off-image gaze kept, flagged
    assert fx["shown_ymin_px"][0] == 303.0 and fx["px_per_deg_x"][0] == 94.0
    w = cd.tables["words"]
    assert w["word"].to_list() == ["no", "pneumothorax", ".", "heart", "normal", "."]
    assert w["char_start"].null_count() == 6
    assert cd.tables["reports"]["text"].to_list() == ["no pneumothorax. heart normal."]
    e = cd.tables["ellipses"]
    assert sorted(zip(e["ellipse_idx"], e["source_label"], e["certainty"])) == [
        (0, "Atelectasis", 5), (0, "Support devices", 5), (1, "Pleural effusion", 3)
    ]  # fmt: skip
    g = cd.tables["gaze_samples"]
    assert g["t_s"].to_list() == [-0.002, -0.001, 0.0, 0.001, 0.002]  # slightly negative times kept
    assert g["x_px"].to_list()[2] is None  # blink


def test_header_only_ellipses_and_discarded_case(rx):
    rel = open_(rx, gaze_samples=True)
    assert rel.read_case(C2).tables["ellipses"].height == 0
    cd = rel.read_case(C3)  # discarded, no gaze folder at all
    assert cd.rejects == []
    assert all(df.height == 0 for df in cd.tables.values())


def test_comma_token_is_quoted_in_words_file(rx):
    p = rx / "main_data" / C1 / "timestamps_transcription.csv"
    p.write_bytes(
        crlf(["word,timestamp_start_word,timestamp_end_word", "heart,0.1,0.4", '",",0.4,0.45', "lungs,0.5,0.9"])
    )
    (rx / "main_data" / C1 / "transcription.txt").write_text("heart, lungs")
    assert open_(rx).read_case(C1).tables["words"]["word"].to_list() == ["heart", ",", "lungs"]


def test_unknown_case_id_is_an_error(rx):
    with pytest.raises(GazeprepError, match="unknown case id"):
        open_(rx).read_case("P100R999999")


# ---- whole-release problems -----------------------------------------------------------------
def test_missing_root_and_metadata(tmp_path, rx):
    with pytest.raises(InputFormatError, match="release folder not found"):
        open_(tmp_path / "nope")
    (rx / "main_data" / "metadata_phase_2.csv").unlink()
    with pytest.raises(InputFormatError) as e:
        open_(rx)
    assert "metadata_phase_2.csv: file not found" in str(e.value)


def test_metadata_wrong_header(rx):
    p = rx / "main_data" / "metadata_phase_3.csv"
    p.write_bytes(p.read_bytes().replace(b"image_size_x", b"image_width", 1))
    with pytest.raises(InputFormatError) as e:
        open_(rx)
    assert "metadata_phase_3.csv" in str(e.value) and "missing column(s) ['image_size_x']" in str(e.value)


# ---- metadata rows --------------------------------------------------------------------------
def test_bad_metadata_row_skips_only_that_case(rx):
    p = rx / "main_data" / "metadata_phase_1.csv"
    lines = p.read_bytes().decode().split("\r\n")
    lines.append(lines[1].replace(C1, "P102R000009").replace(",2544,", ",wide,"))  # row 2: non-numeric
    lines.append(lines[1].replace(C1, "P202R000010"))  # row 3: phase-2 id in phase 1
    p.write_bytes("\r\n".join(x for x in lines if x).encode() + b"\r\n")
    rel = open_(rx)
    assert set(rel.cases["case_id"]) == {C1, C2, C3}
    rows = {r["row"]: r for r in rel.rejects}
    assert rows[2]["file"] == "main_data/metadata_phase_1.csv"
    assert "column 'image_size_x': not a number: 'wide'" in rows[2]["reason"] and "case skipped" in rows[2]["reason"]
    assert "belongs to phase 2, not 1" in rows[3]["reason"] and rows[3]["case_id"] == "P202R000010"


def test_out_of_range_label_drops_only_that_label(rx):
    p = rx / "main_data" / "metadata_phase_2.csv"
    p.write_bytes(p.read_bytes().replace(b",5.0,", b",7,", 1))
    rel = open_(rx)
    (r,) = rel.rejects
    assert (r["case_id"], r["row"]) == (C2, 1)
    assert "column 'Pneumothorax': out of range 0..5: '7'" in r["reason"]
    c2 = rel.case_labels.filter(pl.col("case_id") == C2)
    assert c2.height == 15 and "Pneumothorax" not in c2["source_label"].to_list()


def test_image_path_disagreeing_with_dicom_id(rx):
    p = rx / "main_data" / "metadata_phase_2.csv"
    lines = p.read_bytes().decode().split("\r\n")
    parts = lines[1].split(",")
    parts[4] = "ffffffff-bde0afdd-112c0b34-7bc16630-4e384014"
    lines[1] = ",".join(parts)
    p.write_bytes("\r\n".join(lines).encode())
    rel = open_(rx)
    assert C2 not in rel.cases["case_id"].to_list()
    assert "does not match the image path" in rel.rejects[0]["reason"]


def test_broken_chest_box_keeps_case(rx):
    (rx / "main_data" / C2 / "chest_bounding_box.csv").write_bytes(crlf(["xmin,ymin,xmax,ymax", "381,508,22"]))
    rel = open_(rx)
    c2 = rel.cases.filter(pl.col("case_id") == C2).row(0, named=True)
    assert c2["chest_xmin_px"] is None
    (r,) = rel.rejects
    assert r["file"] == f"main_data/{C2}/chest_bounding_box.csv" and r["row"] == 1
    assert "has 3 fields" in r["reason"] and "chest box left empty" in r["reason"]


# ---- per-case files -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad_row, needle",
    [
        (
            "7.4,7.9,abc,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "column 'x_position': not a number: 'abc'",
        ),
        (
            "7.4,7.9,nan,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "column 'x_position': value is NaN",
        ),
        (
            "7.4,7.9,,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "column 'x_position': empty value",
        ),
        ("7.4,7.9,1200,15", "column 'angular_resolution_x_pixels_per_degree': empty value"),  # truncated row
        (
            "7.9,7.4,1200,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "negative duration: timestamp_end_fixation 7.4 is before timestamp_start_fixation 7.9",
        ),
        (
            "7.0,7.05,1200,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "timestamps out of order: timestamp_start_fixation 7 is earlier than row 1 (7.08)",
        ),
        (
            "7.4,7.9,90000,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "far outside the 2544x3056 image",
        ),
        ("7.4,7.9,1200,1500,1.05,94,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160,99", "has 18 fields"),
        (
            "7.4,7.9,1200,1500,1.05,0,94,0.99829,0.49841,0,303,2521,2463,661,0,3180,2160",
            "angular resolution (pixels per degree) must be > 0",
        ),
        (
            "7.4,7.9,1200,1500,1.05,94,94,0.99829,0.49841,2521,303,0,2463,661,0,3180,2160",
            "shown rectangle is empty or has min > max",
        ),
    ],
)
def test_bad_fixation_row_dropped_rest_kept(rx, bad_row, needle):
    set_fix_rows(rx, C1, [FIX_ROWS[0], bad_row, FIX_ROWS[2]])
    cd = open_(rx).read_case(C1)
    (r,) = cd.rejects
    assert (r["case_id"], r["file"], r["row"], r["stage"]) == (C1, f"main_data/{C1}/fixations.csv", 2, "ingest")
    assert needle in r["reason"] and r["reason"].endswith("row dropped")
    assert cd.tables["fixations"]["source_row"].to_list() == [1, 3]
    assert cd.tables["fixations"]["fixation_idx"].to_list() == [0, 1]
    assert cd.tables["words"].height == 6  # the rest of the case goes on


def test_truncated_fixations_file(rx):
    p = rx / "main_data" / C1 / "fixations.csv"
    p.write_bytes(p.read_bytes()[:-40])  # cut in the middle of the last row, no final newline
    cd = open_(rx).read_case(C1)
    assert cd.tables["fixations"]["source_row"].to_list() == [1, 2]
    assert [r["row"] for r in cd.rejects] == [3]


@pytest.mark.parametrize(
    "writer, needle",
    [
        (lambda p: p.unlink(), "file not found; case skipped"),
        (lambda p: p.write_bytes(crlf([FIX_HEADER])), "no data rows (header only); case skipped"),
        (
            lambda p: p.write_bytes(crlf([FIX_HEADER.replace("x_position", "x_pos"), *FIX_ROWS])),
            "missing column(s) ['x_position']",
        ),
        (lambda p: p.write_bytes(b""), "empty file (no header line)"),
        (lambda p: p.write_bytes(bytes(range(256)) * 4), "binary file (NUL bytes), not CSV text"),
        (lambda p: p.write_bytes(b"\xff\xfe\xfa" * 40), "header line is not UTF-8 text"),
    ],
)
def test_broken_fixations_file_skips_case(rx, writer, needle):
    writer(rx / "main_data" / C1 / "fixations.csv")
    rel = open_(rx)
    cd = rel.read_case(C1)
    (r,) = cd.rejects
    assert r["file"] == f"main_data/{C1}/fixations.csv" and r["row"] is None
    assert needle in r["reason"]
    assert all(df.height == 0 for df in cd.tables.values())
    assert rel.read_case(C2).tables["fixations"].height == 3  # other cases unaffected


def test_missing_case_folder(rx):
    import shutil

    shutil.rmtree(rx / "main_data" / C2)
    rel = open_(rx)  # chest box missing is noted at open time
    assert any(r["case_id"] == C2 and "chest box left empty" in r["reason"] for r in rel.rejects)
    cd = rel.read_case(C2)
    assert "case folder missing; case skipped" in cd.rejects[0]["reason"]


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("transcription.txt", b"", "empty transcript; reports and words left empty"),
        ("transcription.txt", b"  \r\n", "empty transcript"),
        (
            "timestamps_transcription.csv",
            crlf(["word,timestamp_start_word,timestamp_end_word"]),
            "empty transcript (no word rows)",
        ),
        ("timestamps_transcription.csv", None, "file not found; reports and words left empty"),
    ],
)
def test_empty_or_missing_transcript_keeps_fixations(rx, name, content, needle):
    p = rx / "main_data" / C1 / name
    if content is None:
        p.unlink()
    else:
        p.write_bytes(content)
    cd = open_(rx).read_case(C1)
    (r,) = cd.rejects
    assert r["file"] == f"main_data/{C1}/{name}" and needle in r["reason"]
    assert cd.tables["words"].height == 0 and cd.tables["reports"].height == 0
    assert cd.tables["fixations"].height == 3


def test_bad_word_rows(rx):
    p = rx / "main_data" / C1 / "timestamps_transcription.csv"
    p.write_bytes(
        crlf(
            [
                "word,timestamp_start_word,timestamp_end_word",
                "no,1.0,1.2",
                "pneumothorax,1.9,1.2",
                "heart,x,2.8",
                ".,0.5,0.6",
            ]
        )
    )
    cd = open_(rx).read_case(C1)
    reasons = {r["row"]: r["reason"] for r in cd.rejects}
    assert "negative duration" in reasons[2]
    assert "column 'timestamp_start_word': not a number: 'x'" in reasons[3]
    assert "timestamps out of order" in reasons[4]
    assert cd.tables["words"]["word"].to_list() == ["no"]


@pytest.mark.parametrize(
    "row, needle",
    [
        ("1,2,3,4,7," + ",".join(["True"] + ["False"] * 17), "column 'certainty': out of range [1, 5]: '7'"),
        ("1,2,3,4,5," + ",".join(["False"] * 18), "no label column is True"),
        ("9,2,3,4,5," + ",".join(["True"] + ["False"] * 17), "min > max"),
        ("1,2,3,4,5," + ",".join(["yes"] + ["False"] * 17), "not a boolean: 'yes'"),
    ],
)
def test_bad_ellipse_rows(rx, row, needle):
    p = rx / "main_data" / C1 / "anomaly_location_ellipses.csv"
    lines = p.read_bytes().decode().split("\r\n")[:3]
    p.write_bytes(crlf([lines[0], row, *lines[1:]]))
    cd = open_(rx).read_case(C1)
    (r,) = cd.rejects
    assert r["row"] == 1 and needle in r["reason"]
    assert cd.tables["ellipses"]["ellipse_idx"].unique().sort().to_list() == [0, 1]  # the 2 good ellipses


def test_ellipses_wrong_header_leaves_ellipses_empty(rx):
    p = rx / "main_data" / C1 / "anomaly_location_ellipses.csv"
    p.write_bytes(p.read_bytes().replace(b"Wide mediastinum", b"Wide", 1))
    cd = open_(rx).read_case(C1)
    (r,) = cd.rejects
    assert "missing column(s) ['Wide mediastinum']" in r["reason"] and "ellipses left empty" in r["reason"]
    assert cd.tables["ellipses"].height == 0 and cd.tables["fixations"].height == 3


def test_missing_gaze_file_only_affects_gaze(rx):
    (rx / "gaze_data" / C2 / "gaze.csv").unlink()
    cd = open_(rx, gaze_samples=True).read_case(C2)
    (r,) = cd.rejects
    assert r["file"] == f"gaze_data/{C2}/gaze.csv" and "gaze samples left empty" in r["reason"]
    assert cd.tables["fixations"].height == 3 and cd.tables["gaze_samples"].height == 0


def test_unordered_gaze_samples(rx):
    p = rx / "gaze_data" / C1 / "gaze.csv"
    lines = p.read_bytes().decode().split("\r\n")
    lines[2], lines[3] = lines[3], lines[2]
    p.write_bytes("\r\n".join(lines).encode())
    cd = open_(rx, gaze_samples=True).read_case(C1)
    assert [r["row"] for r in cd.rejects] == [3] and "out of order" in cd.rejects[0]["reason"]
    assert cd.tables["gaze_samples"].height == 4


def test_read_case_pickles(rx):
    import pickle

    rel = open_(rx)
    cd = pickle.loads(pickle.dumps(rel.read_case(C1)))
    assert cd.tables["fixations"].height == 3
    rel2 = pickle.loads(pickle.dumps(rel))
    assert rel2.read_case(C1).tables["words"].height == 6


def test_duplicate_id(rx):
    p1 = rx / "main_data" / "metadata_phase_1.csv"
    row = p1.read_bytes().decode().split("\r\n")[1]
    p1.write_bytes(p1.read_bytes() + (row + "\r\n").encode())
    rel = open_(rx)
    assert rel.cases["case_id"].to_list().count(C1) == 1
    (r,) = rel.rejects
    assert r["row"] == 2 and f"duplicate id '{C1}' (first in main_data/metadata_phase_1.csv row 1)" in r["reason"]


def test_root_with_physionet_prefix(tmp_path):
    root = tmp_path / "dl"
    write_reflacx(root / "physionet.org/files/reflacx-xray-localization/1.0.0")
    assert open_(root).cases.height == 3


def test_symlinked_case_folder_is_followed(rx, tmp_path):
    """Ids are validated, so a case folder the user symlinked elsewhere is read normally."""
    import shutil

    outside = tmp_path / "elsewhere"
    shutil.move(str(rx / "main_data" / C2), outside)
    (rx / "main_data" / C2).symlink_to(outside, target_is_directory=True)
    cd = open_(rx).read_case(C2)
    assert cd.rejects == [] and cd.tables["fixations"].height == 3


def test_reader_errors_skip_the_case_not_the_run(rx, monkeypatch):
    """A reader error on malformed data (here a ValueError, or PIL's errno-less OSError) skips the case."""
    rel = open_(rx)

    def boom(*a, **k):
        raise ValueError("could not convert string to float: 'x'")

    monkeypatch.setattr(rel, "_fixations", boom)
    cd = rel.read_case(C1)
    (r,) = cd.rejects
    assert (
        r["case_id"] == C1 and "ValueError: could not convert" in r["reason"] and r["reason"].endswith("case skipped")
    )
    assert all(df.height == 0 for df in cd.tables.values())

    def decoder(*a, **k):
        raise OSError("image file is truncated")  # no errno: bad bytes, not an I/O fault

    monkeypatch.setattr(rel, "_fixations", decoder)
    (r,) = rel.read_case(C1).rejects
    assert "image file is truncated" in r["reason"] and r["reason"].endswith("case skipped")


@pytest.mark.parametrize(
    "err", [OSError(5, "Input/output error", "main_data/x"), PermissionError(13, "Permission denied", "main_data/x")]
)
def test_io_fault_while_reading_propagates(rx, monkeypatch, err):
    """EIO/EACCES on an existing file is an I/O fault: never a per-case reject (the build stops on it)."""
    rel = open_(rx)

    def boom(*a, **k):
        raise err

    monkeypatch.setattr(rel, "_fixations", boom)
    with pytest.raises(OSError) as e:
        rel.read_case(C1)
    assert e.value is err


def _fail_reading(monkeypatch, name: str, exc: OSError) -> None:
    """Make ``Path.read_bytes`` raise ``exc`` for files called ``name`` (an I/O fault on an existing file)."""
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == name:
            raise exc
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


def test_missing_file_is_a_reject_eio_on_an_existing_one_propagates(rx, monkeypatch):
    """A per-case file absent when listed is a data problem (reject naming it); an EIO reading one
    that exists is an I/O fault (propagates, the build stops)."""
    import errno

    (rx / "main_data" / C1 / "fixations.csv").unlink()
    rel = open_(rx)
    (r,) = rel.read_case(C1).rejects
    assert r["file"] == f"main_data/{C1}/fixations.csv" and r["reason"] == "file not found; case skipped"
    _fail_reading(monkeypatch, "fixations.csv", OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError) as e:
        rel.read_case(C2)
    assert e.value.errno == errno.EIO and not isinstance(e.value, GazeprepError)


def test_eacces_on_a_chest_box_stops_the_open(rx, monkeypatch):
    import errno

    (rx / "main_data" / C2 / "chest_bounding_box.csv").unlink()
    rel = open_(rx)  # missing: a reject, the case stays
    (r,) = [r for r in rel.rejects if r["case_id"] == C2]
    assert r["file"] == f"main_data/{C2}/chest_bounding_box.csv" and r["reason"] == "file missing; chest box left empty"
    _fail_reading(monkeypatch, "chest_bounding_box.csv", PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        open_(rx)
