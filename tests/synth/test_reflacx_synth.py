"""REFLACX generator: layout, exact formats and meaningful ground truth."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gazeprep.synth.findings import REFLACX_P1_LABELS, REFLACX_P23_LABELS
from gazeprep.synth.reflacx import FIXATION_COLUMNS, GAZE_COLUMNS, view_rects

sys.path.insert(0, str(Path(__file__).parent))
from _window_check import window_vs_whole  # noqa: E402

FIXED = [
    "id",
    "split",
    "eye_tracking_data_discarded",
    "image",
    "dicom_id",
    "subject_id",
    "image_size_x",
    "image_size_y",
]
ID_RE = re.compile(r"^P[123]\d{2}R\d{6}$")
IMAGE_RE = re.compile(
    r"^physionet\.org/files/mimic-cxr/2\.0\.0/files/p(1\d)/p(\1\d{6})/s(5\d{7})/([0-9a-f]{8}(-[0-9a-f]{8}){4})\.dcm$"
)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=10000)


def test_all_csvs_use_crlf(reflacx_small):
    files = list(Path(reflacx_small.root).rglob("*.csv"))
    assert len(files) > 30
    for f in files:
        data = f.read_bytes()
        assert data.endswith(b"\r\n"), f
        assert data.count(b"\n") == data.count(b"\r\n"), f


def test_metadata_headers_ids_and_order(reflacx_small, reflacx_big):
    for truth in (reflacx_small, reflacx_big):
        main = Path(truth.root) / "main_data"
        for phase, labels in ((1, REFLACX_P1_LABELS), (2, REFLACX_P23_LABELS), (3, REFLACX_P23_LABELS)):
            rows = _rows(main / f"metadata_phase_{phase}.csv")
            assert rows[0] == FIXED + sorted(labels)
            assert len(rows[0]) == 8 + (18 if phase == 1 else 16)
            ids = [r[0] for r in rows[1:]]
            assert all(ID_RE.match(i) and i[1] == str(phase) for i in ids)
            if phase < 3:
                assert ids == sorted(ids)
            else:
                assert all(i.startswith("P300R") for i in ids)
                images = [r[3] for r in rows[1:]]
                assert images == sorted(images)
            for r in rows[1:]:
                m = IMAGE_RE.match(r[3])
                assert m, r[3]
                assert r[4] == m.group(4) and r[5] == m.group(2)
                assert r[1] in {"train", "validate", "test"}
                assert r[2] in {"True", "False"}
    # phase 1 and 2 images are read by 5 radiologists under the same trial number
    p1 = [c for c in reflacx_big.cases if c.phase == 1]
    by_trial = {}
    for c in p1:
        by_trial.setdefault(c.case_id[2:4], set()).add(c.dicom_id)
    assert all(len(v) == 1 for v in by_trial.values())
    assert len(p1) == 5 * len(by_trial)


def test_labels_match_ellipses(reflacx_big):
    header_only = 0
    for c in reflacx_big.cases:
        folder = Path(reflacx_big.root) / "main_data" / c.case_id
        rows = _rows(folder / "anomaly_location_ellipses.csv")
        cols = list(REFLACX_P1_LABELS if c.phase == 1 else REFLACX_P23_LABELS)
        assert rows[0] == ["xmin", "ymin", "xmax", "ymax", "certainty"] + cols
        header_only += len(rows) == 1
        meta = {r[0]: r for r in _rows(Path(reflacx_big.root) / "main_data" / f"metadata_phase_{c.phase}.csv")}[
            c.case_id
        ]
        values = dict(zip(FIXED + cols, meta))
        for lab in cols:
            if lab in ("Support devices", "Quality issue"):
                assert values[lab] in ("True", "False")
            elif lab == "Other":
                continue
            else:
                v = int(values[lab])
                assert 0 <= v <= 5
                certs = [int(r[4]) for r in rows[1:] if r[5 + cols.index(lab)] == "True"]
                assert (max(certs) if certs else 0) == v, (c.case_id, lab)
        for r in rows[1:]:
            assert 1 <= int(r[4]) <= 5 and "True" in r[5:]
            assert int(r[0]) < int(r[2]) and int(r[1]) < int(r[3])
        chest = _rows(folder / "chest_bounding_box.csv")
        assert chest[0] == ["xmin", "ymin", "xmax", "ymax"]
        assert [int(v) for v in chest[1]] == list(c.chest_box)
    assert header_only >= 3  # normal readings have header-only ellipse files


def test_discarded_cases(reflacx_small, reflacx_big):
    n = 0
    for truth in (reflacx_small, reflacx_big):
        for c in truth.cases:
            folder = Path(truth.root) / "main_data" / c.case_id
            assert (folder / "chest_bounding_box.csv").exists() and (folder / "anomaly_location_ellipses.csv").exists()
            assert (Path(truth.root) / "gaze_data" / c.case_id).is_dir()
            if c.discarded:
                n += 1
                for name in ("fixations.csv", "timestamps_transcription.csv", "transcription.txt"):
                    assert not (folder / name).exists()
                assert not (Path(truth.root) / "gaze_data" / c.case_id / "gaze.csv").exists()
                assert c.fixations is None
            else:
                assert (folder / "fixations.csv").exists()
    assert n >= 2


def test_fixations_as_written_and_screen_geometry(reflacx_big, reflacx_small):
    zoomed_cases = 0
    negatives = 0
    for truth in (reflacx_big, reflacx_small):
        for c in truth.cases:
            if c.discarded:
                continue
            path = Path(truth.root) / "main_data" / c.case_id / "fixations.csv"
            assert _rows(path)[0] == list(FIXATION_COLUMNS)
            df = _read(path)
            for col in FIXATION_COLUMNS:
                np.testing.assert_array_equal(df[col].to_numpy(), c.fixations[col], err_msg=col)
            s, e = c.fixations["timestamp_start_fixation"], c.fixations["timestamp_end_fixation"]
            assert np.all(e > s) and np.all(s[1:] >= e[:-1])
            assert np.all(np.round(s, 3) == s)
            f = c.fixations
            W, H = c.image_width, c.image_height
            assert np.all((f["xmin_shown_from_image"] >= 0) & (f["xmax_shown_from_image"] <= W))
            assert np.all((f["ymin_shown_from_image"] >= 0) & (f["ymax_shown_from_image"] <= H))
            assert np.all((f["xmin_in_screen_coordinates"] >= 660) & (f["xmax_in_screen_coordinates"] <= 3840))
            assert np.all((f["ymin_in_screen_coordinates"] >= 0) & (f["ymax_in_screen_coordinates"] <= 2160))
            scale = (f["xmax_shown_from_image"] - f["xmin_shown_from_image"]) / (
                f["xmax_in_screen_coordinates"] - f["xmin_in_screen_coordinates"]
            )
            ppd = f["angular_resolution_x_pixels_per_degree"] / scale
            assert np.all(np.abs(ppd - 94) < 3 + 0.6 / scale)  # rounding of small ints
            zoomed_cases += len(np.unique(f["xmax_shown_from_image"] - f["xmin_shown_from_image"])) > 1
            negatives += int((f["x_position"] < 0).sum())
    assert zoomed_cases >= 5
    assert negatives >= 5  # looks at the control strip map to negative x


def test_fixation_counts_benchmark_scale(reflacx_big):
    n = np.array([len(c.fixations["x_position"]) for c in reflacx_big.cases if not c.discarded])
    assert 180 <= np.median(n) <= 400


def test_transcription_tokens(reflacx_small):
    punct = set()
    for c in reflacx_small.cases:
        if c.discarded:
            continue
        folder = Path(reflacx_small.root) / "main_data" / c.case_id
        text = (folder / "transcription.txt").read_bytes().decode()
        assert not text.endswith("\n") and "\n" not in text
        rows = _rows(folder / "timestamps_transcription.csv")
        assert rows[0] == ["word", "timestamp_start_word", "timestamp_end_word"]
        words = [r[0] for r in rows[1:]]
        assert text.replace(".", " .").replace(",", " ,") == " ".join(words)
        for r in rows[1:]:
            for v in r[1:]:
                assert re.fullmatch(r"\d+\.\d{1,2}", v), v
        st = np.array([float(r[1]) for r in rows[1:]])
        en = np.array([float(r[2]) for r in rows[1:]])
        assert np.all(en > st) and np.all(st[1:] >= en[:-1])
        np.testing.assert_array_equal(st, c.token_start_s)
        punct |= {w for w in words if w in {".", ",", "/"}}
        for m in c.mentions:
            assert " ".join(words[m.token_start : m.token_end]) == m.phrase
            assert m.t_start_s == st[m.token_start]
        for s in c.sentences:
            assert words[s.token_end - 1] == "."
    assert "." in punct


def test_gaze_samples(reflacx_small):
    with_gaze = [c for c in reflacx_small.cases if c.gaze is not None]
    assert len(with_gaze) == 2
    for c in with_gaze:
        path = Path(reflacx_small.root) / "gaze_data" / c.case_id / "gaze.csv"
        rows = _rows(path)
        assert rows[0] == list(GAZE_COLUMNS)
        ms = np.array([round(float(r[0]) * 1000) for r in rows[1:]])
        assert np.all(np.diff(ms) == 1)
        blinks = [r for r in rows[1:] if r[1] == ""]
        assert blinks and all(r[2] == "" and r[3] == "" and r[4] == "" and r[6] != "" and r[8] != "" for r in blinks)
        assert all("." not in r[1] for r in rows[1:])  # integer positions
    assert float(_rows(Path(reflacx_small.root) / "gaze_data" / with_gaze[0].case_id / "gaze.csv")[1][0]) < 0


def test_window_rule_localises_better_than_whole_recording(reflacx_big):
    pairs = np.array([p for c in reflacx_big.cases if not c.discarded for p in window_vs_whole(c)])
    assert len(pairs) >= 20
    assert pairs[:, 0].mean() > pairs[:, 1].mean() + 0.3
    assert (pairs[:, 0] > pairs[:, 1]).mean() >= 0.9


def test_mentions_have_consistent_labels(reflacx_big):
    n_neg = n_unc = 0
    for c in reflacx_big.cases:
        for m in c.mentions:
            if m.negated:
                n_neg += 1
                assert m.certainty is None
                if m.label and not any(k.label == m.label and not k.negated for k in c.mentions):
                    assert c.labels[m.label] in (0, False, None)
            else:
                n_unc += m.uncertain
                if m.label not in (None, "Other", "Support devices", "Quality issue"):
                    assert c.labels[m.label] >= m.certainty
    assert n_neg > 20 and n_unc > 3


def test_view_rects_hand_computed():
    # 2544 x 3056 portrait image fitted: scale = 2160 / 3056 = 0.70681; width on screen 2544 * 0.70681 = 1798.1
    assert view_rects(2544, 3056, 1.0, 0, 0) == (0, 0, 2544, 3056, 661, 0, 2459, 2160)
    # zoom 2 centred: scale 1.41361 -> crop 2248.8 x 1528.0 image px, centred at (1272, 1528)
    assert view_rects(2544, 3056, 2.0, 1272, 1528) == (148, 764, 2396, 2292, 661, 0, 3839, 2160)
    # pan beyond the border is clamped to the image
    r = view_rects(2544, 3056, 2.0, 0, 0)
    assert r[0] == 0 and r[1] == 0


@pytest.mark.parametrize("bad", [0, -3])
def test_rejects_bad_case_count(tmp_path, bad):
    from gazeprep.synth import generate_reflacx

    with pytest.raises(ValueError):
        generate_reflacx(tmp_path, bad, 1)


def test_fixation_targets_lie_in_their_regions(reflacx_big):
    from _window_check import in_boxes

    hits = total = 0
    for c in reflacx_big.cases:
        if c.discarded:
            continue
        assert len(c.fixation_target) == len(c.fixations["x_position"])
        for i in np.unique(c.fixation_target[c.fixation_target >= 0]):
            sel = c.fixation_target == i
            inside = in_boxes(c.fixations["x_position"][sel], c.fixations["y_position"][sel], c.mentions[i].boxes_px)
            hits += int(inside.sum())
            total += int(sel.sum())
    assert total > 500 and hits / total > 0.9
