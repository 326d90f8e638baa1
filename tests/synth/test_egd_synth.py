"""EGD-CXR generator: master sheet, Gazepoint tables, calibration rows, boxes, transcripts, masks."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from gazeprep.synth.egd import GAZE_COLUMNS, MASTER_COLUMNS, resize_pad, x_original, y_original
from gazeprep.synth.phantom import EGD_BBOX_NAMES, phantom_masks


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _official_original(fx: float, fy: float, H: int, W: int, pads) -> tuple[int, int]:
    """Transcription of FORMATS 2.4 with Python scalars (independent of the vectorised generator)."""
    top, bottom, left, right = pads
    if H % 2:
        H += 1
    if W % 2:
        W += 1
    eye_x, eye_y = fx * 1920, fy * 1080
    if left < eye_x < 1920 - right and top < eye_y < 1080 - bottom:
        xo, yo = eye_x - left, eye_y - top
    else:
        xo, yo = -1, -1
    return int(W / (1920 - left - right) * xo), int(H / (1080 - top - bottom) * yo)


def test_resize_pad_known_values():
    assert resize_pad(3056, 2544) == (0, 0, 534, 534)  # portrait (FORMATS 2.5, real rows)
    assert resize_pad(2544, 3056) == (86, 86, 448, 448)  # landscape


def test_x_original_reproduces_real_rows():
    # the three real fixations of FORMATS 2.3 (pads 0,0,534,534; image 2544 x 3056)
    real = [
        (0.45224, 0.33879000000000004, 998, 1035),
        (0.44419, 0.28933000000000003, 952, 884),
        (0.39018, 0.28168000000000004, 642, 860),
    ]
    fx = np.array([r[0] for r in real])
    fy = np.array([r[1] for r in real])
    pads = (0, 0, 534, 534)
    assert x_original(fx, fy, 3056, 2544, pads).tolist() == [r[2] for r in real]
    assert y_original(fx, fy, 3056, 2544, pads).tolist() == [r[3] for r in real]
    # outside the image: -1 scaled and truncated, a small negative number
    assert x_original(np.array([0.1]), np.array([0.5]), 3056, 2544, pads)[0] == int(-2544 / 852)


def test_master_sheet(egd):
    path = Path(egd.root) / "master_sheet.csv"
    rows = _rows(path)
    assert rows[0] == list(MASTER_COLUMNS) and len(rows[0]) == 59
    assert len(rows) - 1 == len(egd.cases)
    raw = path.read_bytes()
    assert raw.count(b"\n") > len(rows)  # multi-line quoted indications
    assert b"\r\n" not in raw
    for r, c in zip(rows[1:], egd.cases):
        v = dict(zip(MASTER_COLUMNS, r))
        assert v["dicom_id"] == c.dicom_id and v["path"] == c.path
        assert sum(int(v[k]) for k in ("Normal", "CHF", "pneumonia")) == 1
        assert v[c.class_label] == "1"
        pads = tuple(int(v[k]) for k in ("image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"))
        assert pads == resize_pad(c.image_height, c.image_width) == c.pads
        for k, val in c.master.items():
            assert v[k] == ("" if val is None else str(val)), k
        for k in MASTER_COLUMNS:
            if k.endswith("__chx"):
                assert v[k] in ("", "1", "0", "-1")
    assert any('"' in line for line in raw.decode().splitlines() if "," in line)


def test_gaze_tables(egd):
    master_ids = {c.dicom_id for c in egd.cases}
    for name, attr in (("fixations.csv", "fixations"), ("eye_gaze.csv", "gaze")):
        path = Path(egd.root) / name
        rows = _rows(path)
        assert rows[0] == list(GAZE_COLUMNS) and len(rows[0]) == 37
        df = pl.read_csv(path, infer_schema_length=0)
        ids = df["DICOM_ID"].to_list()
        cal = {i for i in ids if i not in master_ids}
        assert cal == set(egd.calibration_ids) and len(cal) >= 2
        assert all(len(i) == 39 for i in cal)
        assert all(any(m.startswith(i) for m in master_ids) for i in cal)
        assert df["SESSION_ID"].n_unique() >= 2
        for c in egd.cases:
            sub = df.filter(pl.col("DICOM_ID") == c.dicom_id)
            for col in GAZE_COLUMNS:
                if col == "DICOM_ID":
                    continue
                got = np.array([float(x) for x in sub[col].to_list()])
                np.testing.assert_array_equal(got, np.asarray(getattr(c, attr)[col], dtype=float), err_msg=col)
            t = np.array([float(x) for x in sub["Time (in secs)"].to_list()])
            assert t[0] < (0.05 if attr == "gaze" else 2.0) and np.all(np.diff(t) > 0)  # restarts per image
        # official mapping on every row, calibration rows included
        fx = [float(x) for x in df["FPOGX"].to_list()]
        fy = [float(x) for x in df["FPOGY"].to_list()]
        by_id = egd.by_id()
        for i, did in enumerate(ids):
            if did in by_id:
                c = by_id[did]
                exp = _official_original(fx[i], fy[i], c.image_height, c.image_width, c.pads)
            else:
                exp = _official_original(fx[i], fy[i], 1080, 1920, (0, 0, 0, 0))
            assert (int(df["X_ORIGINAL"][i]), int(df["Y_ORIGINAL"][i])) == exp
    fx = pl.read_csv(Path(egd.root) / "fixations.csv", infer_schema_length=0)
    t = [float(x) for x in fx["Time (in secs)"].to_list()]
    s = [float(x) for x in fx["FPOGS"].to_list()]
    d = [float(x) for x in fx["FPOGD"].to_list()]
    assert all(ti == si + di for ti, si, di in zip(t, s, d))
    xo = np.array([int(x) for x in fx["X_ORIGINAL"].to_list()])
    by_id = egd.by_id()
    left = np.array([by_id[i].pads[2] if i in by_id else 0 for i in fx["DICOM_ID"].to_list()])
    outside = np.array([float(x) for x in fx["FPOGX"].to_list()]) * 1920 <= left
    # some looks fall on the padding; they map to int(-W / width) <= 0 (0 for these small images)
    assert outside.any() and outside.mean() < 0.2
    assert np.all(xo[outside] <= 0)
    assert any(re.search(r"\.\d*0000000\d$", x) or re.search(r"9999999\d*$", x) for x in fx["Time (in secs)"].to_list())


def test_bounding_boxes(egd):
    path = Path(egd.root) / "bounding_boxes.csv"
    rows = _rows(path)
    assert rows[0] == ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
    body = rows[1:]
    assert body == sorted(body, key=lambda r: (r[0], r[1]))
    assert len(body) == 17 * len(egd.cases)
    by = {}
    for r in body:
        assert all(re.fullmatch(r"\d+\.0", v) for v in r[2:])
        x1, x2, y1, y2 = map(float, r[2:])
        assert x1 < x2 and y1 < y2
        by.setdefault(r[0], []).append(r[1])
    assert all(tuple(v) == EGD_BBOX_NAMES for v in by.values())


def test_transcripts_and_masks(egd):
    for c in egd.cases:
        folder = Path(egd.root) / "audio_segmentation_transcripts" / c.dicom_id
        doc = json.loads((folder / "transcript.json").read_text())
        assert set(doc) == {"full_text", "time_stamped_text"}
        phrases = [e["phrase"] for e in doc["time_stamped_text"]]
        assert doc["full_text"] == " ".join(phrases) == c.full_text
        assert phrases[-1].endswith(".") and not any(p in (".", ",") for p in phrases)
        b = [e["begin_time"] for e in doc["time_stamped_text"]]
        e = [e["end_time"] for e in doc["time_stamped_text"]]
        assert all(x < y for x, y in zip(b, e)) and b == sorted(b)
        assert sorted(p.name for p in folder.glob("*.png")) == [
            "aortic_knob.png",
            "left_lung.png",
            "mediastanum.png",
            "right_lung.png",
        ]
        masks = phantom_masks(c.params, c.image_height, c.image_width)
        for struct, fname in (
            ("left_lung", "left_lung.png"),
            ("right_lung", "right_lung.png"),
            ("mediastinum", "mediastanum.png"),
            ("aortic_knob", "aortic_knob.png"),
        ):
            im = Image.open(folder / fname)
            assert im.mode == "L" and im.size == (c.image_width, c.image_height)
            a = np.array(im)
            assert set(np.unique(a)) <= {0, 255}
            np.testing.assert_array_equal(a == 255, masks[struct])
        # the patient's left lung is on the image right
        cols = np.nonzero(masks["left_lung"])[1]
        assert cols.mean() > c.image_width / 2
        for m in c.mentions:
            assert m.t_start_s == c.word_start_s[m.token_start]
        assert len(c.fixation_target) == len(c.fixations["CNT"])
        assert (c.fixation_target >= 0).mean() > 0.2
