"""Round trip: what ``gazeprep.synth`` wrote (its ground-truth objects) == what ingest reads, value for value.

Covers a freshly generated 200-reading REFLACX release (+ MIMIC tables), a 30-image EGD-CXR
release, and the bundled ``sample_data/`` (regenerated in tmp with the Makefile's arguments to get
its ground truth; the files must be byte-identical).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gazeprep import schema
from gazeprep.datasets import get_adapter
from gazeprep.datasets.egd import CHX_LABELS, CLASS_LABELS, FINDING_LABELS
from gazeprep.datasets.mimic import CHEXPERT_LABELS
from gazeprep.paths import sample_data_dir

synth = pytest.importorskip("gazeprep.synth")

MASK_STRUCTURE = {
    "left_lung.png": "left_lung",
    "right_lung.png": "right_lung",
    "mediastanum.png": "mediastinum",
    "mediastinum.png": "mediastinum",
    "aortic_knob.png": "aortic_knob",
}
SAMPLE_ARGS = {"mimic": (12, 7), "reflacx": (12, 7), "egd": (8, 7)}  # Makefile `sample-data`


# ---- comparison helpers ---------------------------------------------------------------------
def _eq(got: pl.Series, want, what: str) -> None:
    g = got.to_numpy().astype(np.float64)
    w = np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, f"{what}: {g.shape} rows != {w.shape}"
    assert np.array_equal(g, w, equal_nan=True), (
        f"{what}: first mismatch at {np.flatnonzero(~((g == w) | (np.isnan(g) & np.isnan(w))))[:5]}"
    )


def mimic_label_rows(truth_mimic, cases) -> dict:
    out = {}
    for cid, subj, study in cases:
        for source, table in (("mimic_chexpert", truth_mimic.chexpert), ("mimic_negbio", truth_mimic.negbio)):
            if (subj, study) in table:
                for lab in CHEXPERT_LABELS:
                    out[(cid, source, lab)] = table[(subj, study)].get(lab)
    return out


def check_reflacx(truth, root: Path, truth_mimic=None, mimic_root: Path | None = None) -> int:
    rel = get_adapter("reflacx").open(root, gaze_samples=True, mimic_root=mimic_root)
    assert rel.rejects == []
    assert rel.cases["case_id"].to_list() == [c.case_id for c in truth.cases]
    rows = {r["case_id"]: r for r in rel.cases.iter_rows(named=True)}
    lab = rel.case_labels
    got_labels = {
        (r["case_id"], r["source_label"]): (r["value"], r["text"])
        for r in lab.filter(pl.col("source") == "reflacx_metadata").iter_rows(named=True)
    }
    want_labels = {}
    n_fix = 0
    for c in truth.cases:
        r = rows[c.case_id]
        assert r == {
            "dataset": "reflacx", "case_id": c.case_id, "image_id": c.dicom_id, "subject_id": c.subject_id,
            "study_id": c.study_id, "split": c.split, "image_path": c.image, "image_height_px": c.image_height,
            "image_width_px": c.image_width, "phase": c.phase, "reader": None, "discarded": c.discarded,
            "chest_xmin_px": float(c.chest_box[0]), "chest_ymin_px": float(c.chest_box[1]),
            "chest_xmax_px": float(c.chest_box[2]), "chest_ymax_px": float(c.chest_box[3]),
            "pad_top_px": None, "pad_bottom_px": None, "pad_left_px": None, "pad_right_px": None,
        }, c.case_id  # fmt: skip
        assert list(c.labels) == list(truth.label_columns[c.phase])
        for name, v in c.labels.items():
            if name == "Other":
                want_labels[(c.case_id, name)] = (None, v if v else None)
            elif isinstance(v, bool):
                want_labels[(c.case_id, name)] = (1.0 if v else 0.0, None)
            else:
                want_labels[(c.case_id, name)] = (float(v), None)
        cd = rel.read_case(c.case_id)
        want_rejects = [f"gaze_data/{c.case_id}/gaze.csv"] if (c.gaze is None and not c.discarded) else []
        assert [x["file"] for x in cd.rejects] == want_rejects, (c.case_id, cd.rejects)
        t = cd.tables
        for name, df in t.items():
            schema.validate(df, name)
        # ellipses: one row per (ellipse, True label)
        want_ell = sorted(
            (i, e.xmin, e.ymin, e.xmax, e.ymax, e.certainty, lab_)
            for i, e in enumerate(c.ellipses)
            for lab_ in e.labels
        )
        got_ell = sorted(
            t["ellipses"]
            .select("ellipse_idx", "xmin_px", "ymin_px", "xmax_px", "ymax_px", "certainty", "source_label")
            .iter_rows()
        )
        assert got_ell == want_ell, c.case_id
        if c.discarded:
            assert t["fixations"].height == t["words"].height == t["reports"].height == t["gaze_samples"].height == 0
            continue
        f, fx = t["fixations"], c.fixations
        n_fix += f.height
        for out, col in [
            ("t_start_s", "timestamp_start_fixation"), ("t_end_s", "timestamp_end_fixation"),
            ("x_px", "x_position"), ("y_px", "y_position"), ("pupil_area", "pupil_area_normalized"),
            ("px_per_deg_x", "angular_resolution_x_pixels_per_degree"), ("px_per_deg_y", "angular_resolution_y_pixels_per_degree"),
            ("window_width", "window_width"), ("window_level", "window_level"),
            ("shown_xmin_px", "xmin_shown_from_image"), ("shown_ymin_px", "ymin_shown_from_image"),
            ("shown_xmax_px", "xmax_shown_from_image"), ("shown_ymax_px", "ymax_shown_from_image"),
        ]:  # fmt: skip
            _eq(f[out], fx[col], f"{c.case_id} fixations.{out}")
        x, y = np.asarray(fx["x_position"], float), np.asarray(fx["y_position"], float)
        assert f["in_image"].to_list() == list((x >= 0) & (x < c.image_width) & (y >= 0) & (y < c.image_height))
        assert f["source_row"].to_list() == list(range(1, len(x) + 1))
        assert t["reports"]["text"].to_list() == [c.transcription]
        w = t["words"]
        assert w["word"].to_list() == c.tokens
        _eq(w["t_start_s"], c.token_start_s, f"{c.case_id} words.t_start_s")
        _eq(w["t_end_s"], c.token_end_s, f"{c.case_id} words.t_end_s")
        if c.gaze is not None:
            g, gz = t["gaze_samples"], c.gaze
            for out, col in [("t_s", "timestamp_sample"), ("x_px", "x_position"), ("y_px", "y_position"),
                             ("px_per_deg_x", "angular_resolution_x_pixels_per_degree"),
                             ("px_per_deg_y", "angular_resolution_y_pixels_per_degree")]:  # fmt: skip
                _eq(g[out], gz[col], f"{c.case_id} gaze.{out}")
    assert got_labels == want_labels
    if truth_mimic is not None:
        got = {
            (r["case_id"], r["source"], r["source_label"]): r["value"]
            for r in lab.filter(pl.col("source") != "reflacx_metadata").iter_rows(named=True)
        }
        want = mimic_label_rows(truth_mimic, [(c.case_id, c.subject_id, c.study_id) for c in truth.cases])
        assert got == want and len(want) > 0
    return n_fix


def check_egd(truth, root: Path, truth_mimic, mimic_root: Path) -> None:
    rel = get_adapter("egd-cxr").open(root, gaze_samples=True, mimic_root=mimic_root)
    assert rel.cases["case_id"].to_list() == [c.dicom_id for c in truth.cases]
    # calibration rows: dropped and counted, one rejects row per pseudo-id and file
    assert rel.stats["calibration_rows"] == sum(k.n_fixations for k in truth.calibrations)
    assert rel.stats["calibration_gaze_rows"] == sum(k.n_gaze for k in truth.calibrations)
    assert rel.stats["calibration_ids"] == len(truth.calibrations) > 0
    want_rej = sorted(
        [(k.pseudo_id, "fixations.csv", f"{k.n_fixations} fixation rows dropped") for k in truth.calibrations]
        + [(k.pseudo_id, "eye_gaze.csv", f"{k.n_gaze} gaze rows dropped") for k in truth.calibrations]
    )
    assert sorted((r["case_id"], r["file"], r["reason"].split(": ")[-1]) for r in rel.rejects) == want_rej
    splits = {i.dicom_id: i.split for i in truth_mimic.images}
    rows = {r["case_id"]: r for r in rel.cases.iter_rows(named=True)}
    labels = {
        (r["case_id"], r["source_label"]): r["value"]
        for r in rel.case_labels.filter(pl.col("source") == "egd_master").iter_rows(named=True)
    }
    for c in truth.cases:
        r = rows[c.dicom_id]
        top, bottom, left, right = c.pads
        assert r == {
            "dataset": "egd-cxr", "case_id": c.dicom_id, "image_id": c.dicom_id, "subject_id": c.patient_id,
            "study_id": c.study_id, "split": splits.get(c.dicom_id), "image_path": c.path,
            "image_height_px": c.image_height, "image_width_px": c.image_width, "phase": None, "reader": None,
            "discarded": False, "chest_xmin_px": None, "chest_ymin_px": None, "chest_xmax_px": None,
            "chest_ymax_px": None, "pad_top_px": top, "pad_bottom_px": bottom, "pad_left_px": left, "pad_right_px": right,
        }, c.dicom_id  # fmt: skip
        for col in CLASS_LABELS + FINDING_LABELS + CHX_LABELS:
            v = c.master[col]
            assert labels[(c.dicom_id, col)] == (None if v is None or v == "" else float(v)), (c.dicom_id, col)
        cd = rel.read_case(c.dicom_id)
        assert cd.rejects == [], cd.rejects
        t = cd.tables
        for name, df in t.items():
            schema.validate(df, name)
        W, H = c.image_width, c.image_height
        for table, src in (("fixations", c.fixations), ("gaze_samples", c.gaze)):
            f = t[table]
            fx_, fy_ = np.asarray(src["FPOGX"], float), np.asarray(src["FPOGY"], float)
            # independent: FORMATS 2.4 without the int() and without the -1 clamp
            ex = (W + W % 2) / (1920 - left - right) * (fx_ * 1920 - left)
            ey = (H + H % 2) / (1080 - top - bottom) * (fy_ * 1080 - top)
            np.testing.assert_allclose(f["x_px"].to_numpy(), ex, rtol=0, atol=1e-9)
            np.testing.assert_allclose(f["y_px"].to_numpy(), ey, rtol=0, atol=1e-9)
            inside = (
                (fx_ * 1920 > left) & (fx_ * 1920 < 1920 - right) & (fy_ * 1080 > top) & (fy_ * 1080 < 1080 - bottom)
            )
            assert np.array_equal(np.trunc(f["x_px"].to_numpy()[inside]), np.asarray(src["X_ORIGINAL"])[inside])
            assert np.array_equal(np.trunc(f["y_px"].to_numpy()[inside]), np.asarray(src["Y_ORIGINAL"])[inside])
            assert f["in_image"].to_list() == list((ex >= 0) & (ex < W) & (ey >= 0) & (ey < H))
            if table == "fixations":
                _eq(f["t_start_s"], src["FPOGS"], "FPOGS")
                _eq(f["t_end_s"], np.asarray(src["FPOGS"], float) + np.asarray(src["FPOGD"], float), "FPOGS+FPOGD")
                np.testing.assert_allclose(f["t_end_s"].to_numpy(), src["Time (in secs)"], atol=1.5e-5)
            else:
                _eq(f["t_s"], src["Time (in secs)"], "Time (in secs)")
        assert t["reports"]["text"].to_list() == [c.full_text]
        assert t["words"]["word"].to_list() == c.words
        _eq(t["words"]["t_start_s"], c.word_start_s, "begin_time")
        _eq(t["words"]["t_end_s"], c.word_end_s, "end_time")
        got_boxes = {
            r[0]: r[1:] for r in t["boxes"].select("box_name", "xmin_px", "xmax_px", "ymin_px", "ymax_px").iter_rows()
        }
        assert got_boxes == c.boxes
        assert sorted(t["masks"]["structure"]) == sorted(MASK_STRUCTURE[m] for m in c.mask_files)
        for p in t["masks"]["path"]:
            assert (root / p).is_file()


# ---- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    m = synth.generate_mimic(d / "mimic", 12, 11)
    r = synth.generate_reflacx(d / "reflacx", 200, 11, mimic_root=d / "mimic")
    e = synth.generate_egd(d / "egd", 30, 11, mimic_root=d / "mimic")
    return d, m, r, e


def test_reflacx_200_roundtrip(generated):
    d, m, r, _ = generated
    assert len(r.cases) == 200
    assert check_reflacx(r, d / "reflacx", m, d / "mimic") > 1000


def test_egd_roundtrip(generated):
    d, m, _, e = generated
    check_egd(e, d / "egd", m, d / "mimic")


def test_mimic_roundtrip(generated):
    d, m, _, _ = generated
    rel = get_adapter("mimic-cxr").open(d / "mimic")
    assert rel.rejects == []
    got = {r["case_id"]: r for r in rel.cases.iter_rows(named=True)}
    assert list(got) == [i.dicom_id for i in m.images]
    for i in m.images:
        g = got[i.dicom_id]
        assert (g["subject_id"], g["study_id"], g["split"], g["image_height_px"], g["image_width_px"], g["image_path"]) == (
            i.subject_id, i.study_id, i.split, i.rows, i.columns, i.jpg_path
        )  # fmt: skip
    got_l = {(r["case_id"], r["source"], r["source_label"]): r["value"] for r in rel.case_labels.iter_rows(named=True)}
    assert got_l == mimic_label_rows(m, [(i.dicom_id, i.subject_id, i.study_id) for i in m.images])


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def sample_truth(tmp_path_factory):
    sd = sample_data_dir()
    if not (sd / "reflacx" / "main_data").is_dir() or not (sd / "egd-cxr" / "master_sheet.csv").is_file():
        pytest.skip("sample_data/ not generated yet")
    d = tmp_path_factory.mktemp("sample")
    m = synth.generate_mimic(d / "mimic-cxr", *SAMPLE_ARGS["mimic"])
    r = synth.generate_reflacx(d / "reflacx", *SAMPLE_ARGS["reflacx"], mimic_root=d / "mimic-cxr")
    e = synth.generate_egd(d / "egd-cxr", *SAMPLE_ARGS["egd"], mimic_root=d / "mimic-cxr")
    return sd, d, m, r, e


def test_sample_data_reflacx_roundtrip(sample_truth):
    sd, d, m, r, _ = sample_truth
    if _digest(sd / "reflacx") != _digest(d / "reflacx"):
        pytest.skip("sample_data/reflacx differs from a regeneration with the Makefile's arguments (stale sample data)")
    check_reflacx(r, sd / "reflacx", m, sd / "mimic-cxr")


def test_sample_data_egd_roundtrip(sample_truth):
    sd, d, m, _, e = sample_truth
    if _digest(sd / "egd-cxr") != _digest(d / "egd-cxr"):
        pytest.skip("sample_data/egd-cxr differs from a regeneration with the Makefile's arguments (stale sample data)")
    check_egd(e, sd / "egd-cxr", m, sd / "mimic-cxr")
