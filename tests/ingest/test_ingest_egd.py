"""EGD-CXR adapter: the real FORMATS rows, screen -> image mapping, calibration rows, quirks, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from ingest_fixtures import (
    EGD_GAZE_HEADER,
    EGD_MASTER_HEADER,
    EGD_REAL_ROWS,
    egd_row,
    master_row,
    write_egd,
    write_mimic,
)

from gazeprep import schema
from gazeprep.datasets import get_adapter
from gazeprep.errors import InputFormatError

REAL_X = [998, 952, 642]
REAL_Y = [1035, 884, 860]


@pytest.fixture
def egd(tmp_path):
    ids = write_egd(tmp_path / "egd")
    write_mimic(tmp_path / "mimic", [(ids["real"], 15628804, 58573295, 3056, 2544)])
    return tmp_path / "egd", tmp_path / "mimic", ids


def open_(root: Path, mimic_root: Path | None = None, **kw):
    return get_adapter("egd-cxr").open(root, mimic_root=mimic_root, **kw)


def write_fixations(root: Path, rows: list[str]) -> None:
    (root / "fixations.csv").write_text("\n".join([EGD_GAZE_HEADER, *rows]) + "\n")


def test_real_rows_reproduce_x_original(egd):
    root, mroot, ids = egd
    rel = open_(root, mroot)
    fx = rel.read_case(ids["real"]).tables["fixations"]
    schema.validate(fx, "fixations")
    assert [int(v) for v in fx["x_px"]] == REAL_X  # float positions; int() gives the release's value
    assert [int(v) for v in fx["y_px"]] == REAL_Y
    assert fx["x_px"].to_list() != [float(v) for v in REAL_X]  # no truncation
    # t_start = FPOGS, t_end = FPOGS + FPOGD (= Time (in secs) in the real rows)
    assert fx["t_start_s"].to_list() == [0.01794, 0.73987, 1.11212]
    assert fx["t_end_s"].to_list() == pytest.approx([0.72363, 1.09607, 1.3869], abs=1e-12)
    assert fx["in_image"].all()
    assert (fx["shown_xmax_px"][0], fx["shown_ymax_px"][0]) == (2544.0, 3056.0)


def test_mapping_matches_formula_independently(egd):
    """Hand-computed: landscape 40x30 with pads (86,86,448,448): x = 40/1024*(0.5*1920-448) = 20."""
    root, _, ids = egd
    fx = open_(root).read_case(ids["landscape"]).tables["fixations"]
    assert fx["x_px"].to_list() == [pytest.approx(20.0), pytest.approx(40 / 1024 * (0.1 * 1920 - 448))]
    assert fx["y_px"].to_list() == [pytest.approx(30 / 908 * (0.5 * 1080 - 86))] * 2
    assert fx["in_image"].to_list() == [True, False]  # gaze left of the image: kept, flagged
    assert fx["x_px"][1] < 0


def test_odd_image_size_pads_by_one_before_scaling(tmp_path):
    ids = write_egd(tmp_path / "egd")
    write_mimic(tmp_path / "mimic", [(ids["real"], 15628804, 58573295, 3055, 2543)])  # odd H and W
    fx = open_(tmp_path / "egd", tmp_path / "mimic").read_case(ids["real"]).tables["fixations"]
    ex = 2544 / (1920 - 534 - 534) * (0.45224 * 1920 - 534)
    assert fx["x_px"][0] == pytest.approx(ex, rel=1e-12)
    assert int(fx["x_px"][0]) == 998


def test_calibration_rows_dropped_and_counted(egd):
    root, mroot, ids = egd
    rel = open_(root, mroot, gaze_samples=True)
    assert rel.stats["calibration_rows"] == 2 and rel.stats["calibration_ids"] == 1
    cal = [r for r in rel.rejects if r["case_id"] == ids["calibration"]]
    assert [(r["file"], r["row"]) for r in cal] == [("fixations.csv", 4), ("eye_gaze.csv", 4)]
    assert (
        "calibration image (39-character DICOM_ID not in master_sheet.csv): 2 fixation rows dropped" == cal[0]["reason"]
    )
    assert set(rel.cases["case_id"]) == {ids["real"], ids["landscape"]}


def test_unknown_dicom_id_rows_dropped(egd):
    root, mroot, ids = egd
    write_fixations(
        root,
        [*EGD_REAL_ROWS, egd_row(3, "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff", 0.5, 0.5, 0.5, 0.1, 0.4, 1, 1)],
    )
    rel = open_(root, mroot)
    (r,) = [r for r in rel.rejects if r["file"] == "fixations.csv"]
    assert r["row"] == 4 and "DICOM_ID not in master_sheet.csv: 1 fixation rows dropped" in r["reason"]


def test_master_sheet_quirks(egd, tmp_path):
    root, mroot, ids = egd
    rel = open_(root, mroot)
    # multi-line quoted indication and quoted dx text do not split rows
    assert rel.cases.height == 2
    c = rel.cases.filter(pl.col("case_id") == ids["real"]).row(0, named=True)
    assert (c["pad_top_px"], c["pad_bottom_px"], c["pad_left_px"], c["pad_right_px"]) == (0, 0, 534, 534)
    assert c["subject_id"] == 15628804 and c["study_id"] == 58573295
    assert c["image_path"] == f"files/p15/p15628804/s58573295/{ids['real']}.dcm"
    assert (c["image_height_px"], c["image_width_px"]) == (3056, 2544)  # MIMIC metadata (no image file, no masks)
    land = rel.cases.filter(pl.col("case_id") == ids["landscape"]).row(0, named=True)
    assert (land["image_height_px"], land["image_width_px"]) == (30, 40)  # from the mask PNGs
    lab = {(r["case_id"], r["source_label"]): r["value"] for r in rel.case_labels.iter_rows(named=True)}
    assert lab[(ids["real"], "CHF")] == 1.0 and lab[(ids["real"], "Normal")] == 0.0
    assert lab[(ids["real"], "edema__chx")] == -1.0 and lab[(ids["real"], "atelectasis__chx")] is None
    # old pad column names are accepted
    p = root / "master_sheet.csv"
    p.write_bytes(
        p.read_bytes().replace(
            b"image_top_pad,image_bottom_pad,image_left_pad,image_right_pad",
            b"image_top,image_bottom,image_left,image_right",
            1,
        )
    )
    assert open_(root, mroot).cases["pad_left_px"].to_list() == [534, 448]


def test_unknown_image_size_skips_case(egd):
    """No MIMIC root and no mask PNG: the size is unknown, so the case is left out of ``cases``
    (never a null size) and its reject names what was looked for."""
    root, _, ids = egd
    rel = open_(root)
    assert rel.cases["case_id"].to_list() == [ids["landscape"]]
    assert rel.cases["image_height_px"].null_count() == 0
    (r,) = [r for r in rel.rejects if r["case_id"] == ids["real"] and r["file"] == "master_sheet.csv"]
    assert r["row"] == 1 and r["reason"].startswith("image size unknown: no MIMIC-CXR root given (--images MIMIC_ROOT")
    assert f"no mask PNG in 'audio_segmentation_transcripts/{ids['real']}/'" in r["reason"]
    assert "left_lung.png, right_lung.png, mediastanum.png or mediastinum.png, aortic_knob.png" in r["reason"]
    assert r["reason"].endswith("case skipped")
    assert rel.stats["size_unknown"] == 1 and rel.stats["size_from_masks"] == 1
    gone = [r for r in rel.rejects if r["case_id"] == ids["real"] and r["file"] == "fixations.csv"]
    assert "master_sheet.csv row of this DICOM_ID was rejected: 3 fixation rows dropped" in gone[0]["reason"]


def test_x_original_disagreement_is_reported(tmp_path):
    ids = write_egd(tmp_path / "egd")
    write_mimic(tmp_path / "mimic", [(ids["real"], 15628804, 58573295, 1528, 1272)])  # wrong (half) size
    cd = open_(tmp_path / "egd", tmp_path / "mimic").read_case(ids["real"])
    (r,) = cd.rejects
    assert r["row"] == 1 and "disagree with the padding mapping of the 1272x1528 image in 3 rows" in r["reason"]
    assert cd.tables["fixations"].height == 3


def test_case_tables(egd):
    root, mroot, ids = egd
    rel = open_(root, mroot, gaze_samples=True)
    cd = rel.read_case(ids["landscape"])
    for name, df in cd.tables.items():
        schema.validate(df, name)
    assert cd.tables["words"]["word"].to_list() == [
        "the",
        "lungs are clear.",
        "heart size normal.",
    ]  # one row per phrase
    assert cd.tables["reports"]["text"][0] == "the lungs are clear. heart size normal."
    m = cd.tables["masks"]
    assert m["structure"].to_list() == ["left_lung", "right_lung", "mediastinum", "aortic_knob"]
    assert m["path"][2] == f"audio_segmentation_transcripts/{ids['landscape']}/mediastanum.png"
    b = rel.read_case(ids["real"]).tables["boxes"]
    assert b.row(0, named=True) | {} == {
        "dataset": "egd-cxr",
        "case_id": ids["real"],
        "box_name": "cardiac silhouette",
        "xmin_px": 1007.0,
        "ymin_px": 1278.0,
        "xmax_px": 1743.0,
        "ymax_px": 2040.0,
    }  # fmt: skip  (file order x1,x2,y1,y2)
    g = cd.tables["gaze_samples"]
    assert g["t_s"].to_list() == [0.6, 1.2]
    c = rel.cases.filter(pl.col("case_id") == ids["real"]).row(0, named=True)
    assert c["split"] == "validate"
    chex = rel.case_labels.filter(pl.col("source") == "mimic_chexpert")
    assert set(chex["case_id"]) == {ids["real"]} and chex.height == 14


def test_correct_mask_spelling_also_accepted(egd):
    root, _, ids = egd
    folder = root / "audio_segmentation_transcripts" / ids["landscape"]
    (folder / "mediastanum.png").rename(folder / "mediastinum.png")
    m = open_(root).read_case(ids["landscape"]).tables["masks"]
    assert m.filter(pl.col("structure") == "mediastinum")["path"][0].endswith("/mediastinum.png")


def test_corrupt_mask_left_out(egd):
    root, _, ids = egd
    (root / "audio_segmentation_transcripts" / ids["landscape"] / "aortic_knob.png").write_bytes(b"not a png")
    cd = open_(root).read_case(ids["landscape"])
    assert "aortic_knob" not in cd.tables["masks"]["structure"].to_list()
    assert any("aortic_knob.png" in r["file"] and "not a PNG" in r["reason"] for r in cd.rejects)


@pytest.mark.parametrize(
    "content, needle, row",
    [
        ('{"full_text": "x", "time_stamped_text": [', "malformed JSON at line 1 column", None),
        ("[1, 2]", "expected a JSON object, found list", None),
        ('{"time_stamped_text": []}', "missing key 'full_text'", None),
        ('{"full_text": "", "time_stamped_text": []}', "empty transcript ('full_text' is empty)", None),
        ('{"full_text": "a", "time_stamped_text": {}}', "'time_stamped_text' is dict, expected a list", None),
    ],
)
def test_broken_transcript_keeps_gaze(egd, content, needle, row):
    root, _, ids = egd
    p = root / "audio_segmentation_transcripts" / ids["landscape"] / "transcript.json"
    p.write_text(content)
    cd = open_(root).read_case(ids["landscape"])
    (r,) = cd.rejects
    assert r["file"] == f"audio_segmentation_transcripts/{ids['landscape']}/transcript.json"
    assert needle in r["reason"] and r["reason"].endswith("reports and words left empty")
    assert cd.tables["words"].height == 0 and cd.tables["fixations"].height == 2


def test_bad_transcript_entries(egd):
    root, _, ids = egd
    p = root / "audio_segmentation_transcripts" / ids["landscape"] / "transcript.json"
    json.dump(
        {
            "full_text": "a b c d",
            "time_stamped_text": [
                {"phrase": "a", "begin_time": 0.0, "end_time": 0.5},
                {"phrase": "b", "begin_time": "soon", "end_time": 0.9},
                {"phrase": "c", "begin_time": 1.5, "end_time": 1.0},
                {"phrase": "", "begin_time": 2.0, "end_time": 2.5},
                {"phrase": "d", "begin_time": 3.0, "end_time": 3.5},
            ],
        },
        p.open("w"),
    )
    cd = open_(root).read_case(ids["landscape"])
    reasons = {r["row"]: r["reason"] for r in cd.rejects}
    assert "entry 2 of time_stamped_text: 'begin_time'/'end_time' not finite numbers ('soon', 0.9)" in reasons[2]
    assert "negative duration: end_time 1 is before begin_time 1.5" in reasons[3]
    assert "missing or empty 'phrase'" in reasons[4]
    assert cd.tables["words"]["word"].to_list() == ["a", "d"]


def test_missing_transcript_folder(egd):
    import shutil

    root, mroot, ids = egd
    shutil.rmtree(root / "audio_segmentation_transcripts" / ids["real"])
    cd = open_(root, mroot).read_case(ids["real"])
    assert [r["reason"] for r in cd.rejects] == ["file missing; reports and words left empty"]
    assert cd.tables["fixations"].height == 3


@pytest.mark.parametrize(
    "row, needle",
    [
        (
            egd_row(2, "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee", 0.6, "abc", 0.5, 0.2, 0.4, 20, 15),
            "column 'FPOGX': not a number: 'abc'",
        ),
        (
            egd_row(2, "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee", 0.6, 0.5, 0.5, 0.2, -0.4, 20, 15),
            "negative duration: FPOGD -0.4",
        ),
        (
            egd_row(2, "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee", 0.6, 0.5, 0.5, 0.1, 0.1, 20, 15),
            "timestamps out of order: FPOGS 0.1 is earlier than row 4 (0.2)",
        ),
        (
            egd_row(2, "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee", 0.6, 55.0, 0.5, 0.2, 0.4, 20, 15),
            "far outside the screen",
        ),
        (
            egd_row(2, "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee", 0.6, "nan", 0.5, 0.2, 0.4, 20, 15),
            "column 'FPOGX': value is NaN",
        ),
    ],
)
def test_bad_fixation_rows(egd, row, needle):
    root, _, ids = egd
    good = [
        egd_row(2, ids["landscape"], 0.6, 0.5, 0.5, 0.2, 0.4, 20, 15),
        egd_row(2, ids["landscape"], 1.2, 0.1, 0.5, 0.7, 0.5, -1, 15),
    ]
    write_fixations(root, [*EGD_REAL_ROWS, good[0], row, good[1]])
    rel = open_(root)
    cd = rel.read_case(ids["landscape"])
    (r,) = [r for r in rel.rejects + cd.rejects if r["row"] == 5]
    assert r["file"] == "fixations.csv" and r["case_id"] == ids["landscape"]
    assert needle in r["reason"] and r["reason"].endswith("row dropped")
    assert cd.tables["fixations"]["source_row"].to_list() == [4, 6]


def test_truncated_fixations_csv(egd):
    root, mroot, ids = egd
    write_fixations(root, [*EGD_REAL_ROWS, egd_row(2, ids["landscape"], 0.6, 0.5, 0.5, 0.2, 0.4, 20, 15)[:60]])
    rel = open_(root, mroot)
    (r,) = [r for r in rel.rejects if r["file"] == "fixations.csv"]
    assert r["row"] == 4 and r["case_id"] == ids["landscape"]
    cd = rel.read_case(ids["landscape"])
    assert "no fixation rows for this DICOM_ID; case skipped" in cd.rejects[0]["reason"]
    assert rel.read_case(ids["real"]).tables["fixations"].height == 3


def test_whole_release_files(egd, tmp_path):
    root, _, _ = egd
    with pytest.raises(InputFormatError, match="release folder not found"):
        open_(tmp_path / "nothing")
    (root / "fixations.csv").unlink()
    with pytest.raises(InputFormatError) as e:
        open_(root)
    assert "fixations.csv: file not found" in str(e.value)
    (root / "master_sheet.csv").write_text(EGD_MASTER_HEADER.replace("patient_id", "subject") + "\n")
    with pytest.raises(InputFormatError) as e:
        open_(root)
    assert "master_sheet.csv" in str(e.value) and "missing column(s) ['patient_id']" in str(e.value)


def test_bad_master_row_skips_that_case(egd):
    root, mroot, ids = egd
    lines = [
        EGD_MASTER_HEADER,
        master_row(ids["real"], 15628804, 58573295, (0, 0, 534, 534), "x"),
        master_row(ids["landscape"], 19462352, 51900589, (86, 86, 448, 448), "y").replace(
            ",86,86,448,", ",86,eighty,448,", 1
        ),
    ]
    (root / "master_sheet.csv").write_text("\n".join(lines) + "\n")
    rel = open_(root, mroot)
    assert rel.cases["case_id"].to_list() == [ids["real"]]
    r = [r for r in rel.rejects if r["file"] == "master_sheet.csv"][0]
    assert r["row"] == 2 and "column 'image_bottom_pad': not a number: 'eighty'" in r["reason"]
    gone = [r for r in rel.rejects if r["case_id"] == ids["landscape"] and r["file"] == "fixations.csv"]
    assert "master_sheet.csv row of this DICOM_ID was rejected: 2 fixation rows dropped" in gone[0]["reason"]


def test_bad_boxes(egd):
    root, mroot, ids = egd
    (root / "bounding_boxes.csv").write_text(
        "dicom_id,bbox_name,x1,x2,y1,y2\n"
        f"{ids['real']},trachea,10.0,5.0,1.0,9.0\n"
        f"{ids['real']},left lung,1.0,5.0,1.0,\n"
        f"{ids['real']},right lung,1.0,5.0,1.0,9.0\n"
    )
    rel = open_(root, mroot)
    rows = {r["row"]: r["reason"] for r in rel.rejects if r["file"] == "bounding_boxes.csv"}
    assert "x1 > x2" in rows[1] and "column 'y2': empty value" in rows[2]
    assert rel.read_case(ids["real"]).tables["boxes"]["box_name"].to_list() == ["right lung"]


def test_missing_eye_gaze_when_requested(egd):
    root, mroot, ids = egd
    (root / "eye_gaze.csv").unlink()
    rel = open_(root, mroot, gaze_samples=True)
    assert any(r["file"] == "eye_gaze.csv" and "gaze samples left empty" in r["reason"] for r in rel.rejects)
    assert rel.read_case(ids["real"]).tables["fixations"].height == 3


def test_image_size_from_dicom_header_under_mimic_root(tmp_path):
    """No metadata row for the image: its size comes from the DICOM header found under mimic_root."""
    import numpy as np
    from test_ingest_images import write_dicom

    ids = write_egd(tmp_path / "egd")
    write_mimic(tmp_path / "mimic", [])  # tables without this image
    dcm = tmp_path / "mimic" / f"files/p15/p15628804/s58573295/{ids['real']}.dcm"
    write_dicom(dcm, np.zeros((3056, 2544), np.uint16))
    rel = open_(tmp_path / "egd", tmp_path / "mimic")
    c = rel.cases.filter(pl.col("case_id") == ids["real"]).row(0, named=True)
    assert (c["image_height_px"], c["image_width_px"]) == (3056, 2544)
    assert [int(v) for v in rel.read_case(ids["real"]).tables["fixations"]["x_px"]] == REAL_X


def test_relative_root_gives_root_relative_reject_paths(egd, monkeypatch):
    root, _, ids = egd
    monkeypatch.chdir(root.parent)
    rel = open_(Path(root.name))
    assert {r["file"] for r in rel.rejects if r["case_id"] == ids["calibration"]} == {"fixations.csv"}
    (root / "audio_segmentation_transcripts" / ids["landscape"] / "transcript.json").write_text("{")
    (r,) = rel.read_case(ids["landscape"]).rejects
    assert r["file"] == f"audio_segmentation_transcripts/{ids['landscape']}/transcript.json"


def test_bad_master_label_drops_only_that_label(egd):
    root, mroot, ids = egd
    p = root / "master_sheet.csv"
    # the real row's Normal,CHF,pneumonia = 0,1,0 -> CHF = 7
    p.write_bytes(p.read_bytes().replace(b",,,0,0,1,0,0,1,", b",,,0,0,7,0,0,1,", 1))
    rel = open_(root, mroot)
    (r,) = [r for r in rel.rejects if r["file"] == "master_sheet.csv"]
    assert (
        r["case_id"] == ids["real"]
        and r["row"] == 1
        and "column 'CHF': '7' is not one of [0, 1]; label left out" in r["reason"]
    )
    assert ids["real"] in rel.cases["case_id"].to_list()
    lab = rel.case_labels.filter((pl.col("case_id") == ids["real"]) & (pl.col("source") == "egd_master"))[
        "source_label"
    ].to_list()
    assert "CHF" not in lab and "Normal" in lab and len(lab) == 28
