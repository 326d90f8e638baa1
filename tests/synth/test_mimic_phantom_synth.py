"""MIMIC-CXR generator, the phantom, determinism and the CLI."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from gazeprep.synth import generate_egd, generate_mimic, generate_reflacx
from gazeprep.synth.mimic import METADATA_COLUMNS, display_8bit
from gazeprep.synth.phantom import params_for_image, phantom_masks, region_boxes, render_phantom, sample_params

DICOM_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
CHEXPERT_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
    "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices"
)


def _gz_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))


def test_mimic_tables(mimic):
    root = Path(mimic.root)
    meta = _gz_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert meta[0] == list(METADATA_COLUMNS)
    assert len(meta) - 1 == len(mimic.images)
    for r in meta[1:]:
        assert DICOM_RE.match(r[0]) and len(r[0]) == 44
        assert r[4] in ("PA", "AP")
        assert re.fullmatch(r"2\d{7}", r[7])
        assert re.fullmatch(r"[1-9]\d*\.\d+|0\.\d+", r[8]), r[8]  # StudyTime without leading zeros
    split = _gz_rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    assert split[0] == ["dicom_id", "study_id", "subject_id", "split"]
    assert {r[3] for r in split[1:]} == {"train", "validate", "test"}
    subj_split = {}
    for r in split[1:]:
        assert subj_split.setdefault(r[2], r[3]) == r[3]  # patient-disjoint
    for name in ("chexpert", "negbio"):
        raw = gzip.decompress((root / f"mimic-cxr-2.0.0-{name}.csv.gz").read_bytes()).decode()
        assert raw.splitlines()[0] == CHEXPERT_HEADER
        for r in list(csv.reader(io.StringIO(raw)))[1:]:
            assert all(v in ("", "1.0", "0.0", "-1.0") for v in r[2:])


def test_mimic_images(mimic):
    root = Path(mimic.root)
    photometrics, windows = set(), set()
    for img in mimic.images:
        s = str(img.subject_id)
        assert img.dcm_path == f"files/p{s[:2]}/p{s}/s{img.study_id}/{img.dicom_id}.dcm"
        ds = pydicom.dcmread(root / img.dcm_path)
        px = ds.pixel_array
        assert px.dtype == np.uint16 and ds.BitsStored == 12 and px.max() <= 4095
        assert px.shape == (img.rows, img.columns) and 240 <= img.rows <= 320
        photometrics.add(ds.PhotometricInterpretation)
        has_window = "WindowCenter" in ds
        windows.add(has_window)
        jpg = np.array(Image.open(root / img.jpg_path)).astype(float)
        disp = display_8bit(
            px,
            ds.PhotometricInterpretation,
            float(ds.WindowCenter) if has_window else None,
            float(ds.WindowWidth) if has_window else None,
        )
        assert np.abs(jpg - disp).mean() < 3.0
        # in the displayed image the lungs are dark and the mediastinum bright, for both photometrics
        m = phantom_masks(img.params, img.rows, img.columns)
        lungs = m["left_lung"] | m["right_lung"]
        assert jpg[lungs].mean() + 40 < jpg[m["mediastinum"]].mean()
        raw_lung, raw_med = px[lungs].mean(), px[m["mediastinum"]].mean()
        assert (raw_lung > raw_med) == (ds.PhotometricInterpretation == "MONOCHROME1")
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert windows == {True, False}


def test_display_8bit_hand_computed():
    stored = np.array([[0, 1000, 2000, 4095]], dtype=np.uint16)
    # window centre 2000, width 2000 -> [1000, 3000] maps to [0, 255]
    assert display_8bit(stored, "MONOCHROME2", 2000, 2000).tolist() == [[0, 0, 128, 255]]
    assert display_8bit(stored, "MONOCHROME1", 2000, 2000).tolist() == [[255, 255, 128, 0]]  # 127.5 rounds to even
    assert display_8bit(stored, "MONOCHROME2", None, None).tolist() == [[0, 62, 125, 255]]


def test_phantom_masks_and_regions():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = sample_params(rng)
        H, W = 300, 250
        m = phantom_masks(p, H, W)
        assert set(m) == {"left_lung", "right_lung", "mediastinum", "aortic_knob"}
        assert all(v.shape == (H, W) and v.dtype == bool for v in m.values())
        assert not (m["left_lung"] & m["right_lung"]).any()
        assert not ((m["left_lung"] | m["right_lung"]) & m["mediastinum"]).any()
        # patient's left lung = image right
        assert np.nonzero(m["left_lung"])[1].mean() > W / 2 > np.nonzero(m["right_lung"])[1].mean()
        boxes = region_boxes(p, H, W)
        for side in ("left", "right"):
            x0, y0, x1, y1 = boxes[f"{side} lung"]
            rr, cc = np.nonzero(m[f"{side}_lung"])
            inside = (cc + 0.5 >= x0) & (cc + 0.5 <= x1) & (rr + 0.5 >= y0) & (rr + 0.5 <= y1)
            assert inside.mean() > 0.97
            zones = [boxes[f"{side} {z} lung zone"] for z in ("upper", "mid", "lower")]
            assert zones[0][1] == y0 and zones[2][3] == y1 and zones[0][3] == zones[1][1]
        img = render_phantom(p, H, W, np.random.default_rng(1))
        assert img.min() >= 0 and img.max() <= 1
        assert img[m["left_lung"] | m["right_lung"]].mean() + 0.2 < img[m["mediastinum"]].mean()
    # the same dicom id always gives the same phantom
    assert params_for_image("a" * 44) == params_for_image("a" * 44)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_determinism(tmp_path):
    digests = []
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        base = tmp_path / run
        generate_mimic(base / "mimic", 4, seed)
        generate_reflacx(base / "reflacx", 12, seed, mimic_root=base / "mimic", gaze_cases=1)
        generate_egd(base / "egd", 4, seed, mimic_root=base / "mimic")
        digests.append(_tree_digest(base))
    assert digests[0] == digests[1]
    assert len(digests[0]) > 50
    same = [k for k in digests[0] if digests[2].get(k) == digests[0][k]]
    assert len(same) < 0.05 * len(digests[0])


def test_cli(tmp_path, capsys):
    from gazeprep.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["synth", "--dataset", "nope", "--out", str(tmp_path / "x"), "--cases", "2"])
    assert exc.value.code == 2  # an invalid --dataset value is a usage error
    assert "Invalid value for '--dataset'" in capsys.readouterr().err
    main(["synth", "--dataset", "mimic-cxr", "--out", str(tmp_path / "m"), "--cases", "3", "--seed", "1"])
    main(
        [
            "synth",
            "--dataset",
            "reflacx",
            "--out",
            str(tmp_path / "r"),
            "--cases",
            "7",
            "--seed",
            "1",
            "--mimic-root",
            str(tmp_path / "m"),
            "--no-progress",
        ]
    )
    main(
        [
            "synth",
            "--dataset",
            "egd-cxr",
            "--out",
            str(tmp_path / "e"),
            "--cases",
            "3",
            "--seed",
            "1",
            "--mimic-root",
            str(tmp_path / "m"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert "wrote synthetic reflacx: 7 readings" in out
    assert (tmp_path / "r" / "main_data" / "metadata_phase_3.csv").exists()
    assert (tmp_path / "e" / "master_sheet.csv").exists()


def test_boxed_masks_equal_dense_evaluation():
    from gazeprep.synth import phantom as ph

    rng = np.random.default_rng(5)
    for H, W in ((301, 257), (240, 300)):
        p = ph.sample_params(rng, cardiomegaly=bool(rng.random() < 0.5))
        m = ph.phantom_masks(p, H, W)
        u, v = ph._grid(H, W)
        med = np.broadcast_to(ph._mediastinum_mask(p, u, v), (H, W))
        heart = np.broadcast_to(ph._heart_mask(p, u, v, grow=0.005), (H, W))
        for side in ("left", "right"):
            dense = np.broadcast_to(ph._lung_mask(p, side, u, v), (H, W)) & ~med & ~heart
            np.testing.assert_array_equal(m[f"{side}_lung"], dense)
        np.testing.assert_array_equal(m["mediastinum"], med)
        np.testing.assert_array_equal(m["aortic_knob"], np.broadcast_to(ph._knob_mask(p, u, v, H / W), (H, W)))
