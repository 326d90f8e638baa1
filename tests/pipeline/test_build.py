"""End-to-end tests of ``build-heatmaps``: a hand-built REFLACX case against 004's rule computed
independently, worker-count byte identity, kill-and-resume, and the CLI on the sample data."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gazeprep.pipeline.build import BuildOptions, build_heatmaps
from gazeprep.recipes import load_recipe

PHASE23_LABELS = [
    "Abnormal mediastinal contour",
    "Acute fracture",
    "Atelectasis",
    "Consolidation",
    "Enlarged cardiac silhouette",
    "Enlarged hilum",
    "Groundglass opacity",
    "Hiatal hernia",
    "High lung volume / emphysema",
    "Interstitial lung disease",
    "Lung nodule or mass",
    "Other",
    "Pleural abnormality",
    "Pneumothorax",
    "Pulmonary edema",
    "Support devices",
]
FIX_HEADER = (
    "timestamp_start_fixation,timestamp_end_fixation,x_position,y_position,pupil_area_normalized,"
    "angular_resolution_x_pixels_per_degree,angular_resolution_y_pixels_per_degree,window_width,window_level,"
    "xmin_shown_from_image,ymin_shown_from_image,xmax_shown_from_image,ymax_shown_from_image,"
    "xmin_in_screen_coordinates,ymin_in_screen_coordinates,xmax_in_screen_coordinates,ymax_in_screen_coordinates"
)
H, W = 120, 100  # image rows, columns
PPD = 6  # image px per degree -> sigma 6 px


def _crlf(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


def write_hand_release(root: Path) -> dict:
    """One phase-3 REFLACX reading:
    "heart size is normal. small left effusion and atelectasis."

    Sentence 0: t 0.50 .. 2.60 (tokens heart size is normal .), sentence 1 starts at 3.00.
    Window of sentence 1 (004 default): start max(3.0 - 1.5, 0.5) = 1.5, end = start of
    "atelectasis" = 5.00. Fixations (start, end, x, y):
      A (0.0, 1.0, 20, 30)   -> outside the window (ends before 1.5)
      B (1.2, 2.0, 60, 70)   -> overlaps: weight 2.0 - 1.5 = 0.5
      C (2.0, 4.0, 70, 80)   -> inside: weight 2.0
      D (4.5, 6.0, 40, 90)   -> overlaps: weight 5.0 - 4.5 = 0.5
      E (6.0, 7.0, 10, 10)   -> starts after 5.0: excluded
    """
    main = root / "main_data"
    case = "P300R000001"
    dicom = "0a0b0c0d-00000000-11111111-22222222-33333333"
    (main / case).mkdir(parents=True)
    (root / "gaze_data" / case).mkdir(parents=True)
    header = "id,split,eye_tracking_data_discarded,image,dicom_id,subject_id,image_size_x,image_size_y," + ",".join(
        PHASE23_LABELS
    )
    labels = {k: "0" for k in PHASE23_LABELS}
    labels.update({"Pleural abnormality": "5", "Atelectasis": "4", "Support devices": "False", "Other": ""})
    row = (
        f"{case},train,False,physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000001/s50000001/{dicom}.dcm,"
        f"{dicom},10000001,{W},{H}," + ",".join(labels[k] for k in PHASE23_LABELS)
    )
    (main / "metadata_phase_3.csv").write_text(_crlf([header, row]), newline="")
    for p in (1, 2):
        (main / f"metadata_phase_{p}.csv").write_text(_crlf([header if p > 1 else _phase1_header()]), newline="")
    fix = [(0.0, 1.0, 20, 30), (1.2, 2.0, 60, 70), (2.0, 4.0, 70, 80), (4.5, 6.0, 40, 90), (6.0, 7.0, 10, 10)]
    lines = [FIX_HEADER] + [f"{s},{e},{x},{y},1.0,{PPD},{PPD},1,0.5,0,0,{W},{H},661,0,3180,2160" for s, e, x, y in fix]
    (main / case / "fixations.csv").write_text(_crlf(lines), newline="")
    tokens = [
        ("heart", 0.50, 0.80),
        ("size", 0.80, 1.10),
        ("is", 1.10, 1.30),
        ("normal", 1.30, 2.00),
        (".", 2.40, 2.60),
        ("small", 3.00, 3.40),
        ("left", 3.40, 3.80),
        ("effusion", 3.80, 4.50),
        ("and", 4.50, 4.90),
        ("atelectasis", 5.00, 5.80),
        (".", 6.00, 6.20),
    ]
    (main / case / "timestamps_transcription.csv").write_text(
        _crlf(["word,timestamp_start_word,timestamp_end_word"] + [f"{w},{s:.2f},{e:.2f}" for w, s, e in tokens]),
        newline="",
    )
    (main / case / "transcription.txt").write_text("heart size is normal. small left effusion and atelectasis.")
    (main / case / "chest_bounding_box.csv").write_text(
        _crlf(["xmin,ymin,xmax,ymax", f"5,5,{W - 5},{H - 5}"]), newline=""
    )
    ell_header = "xmin,ymin,xmax,ymax,certainty," + ",".join(PHASE23_LABELS)
    ell = {k: "False" for k in PHASE23_LABELS}
    ell["Pleural abnormality"] = "True"
    ell_row = "50,60,90,110,5," + ",".join(ell[k] for k in PHASE23_LABELS)
    ell2 = {k: "False" for k in PHASE23_LABELS}
    ell2["Atelectasis"] = "True"
    ell_row2 = "30,60,60,100,4," + ",".join(ell2[k] for k in PHASE23_LABELS)
    (main / case / "anomaly_location_ellipses.csv").write_text(_crlf([ell_header, ell_row, ell_row2]), newline="")
    return {"case": case, "fixations": fix}


def _phase1_header() -> str:
    p1 = [
        "Airway wall thickening", "Atelectasis", "Consolidation", "Emphysema", "Enlarged cardiac silhouette",
        "Fibrosis", "Fracture", "Groundglass opacity", "Mass", "Nodule", "Other", "Pleural effusion",
        "Pleural thickening", "Pneumothorax", "Pulmonary edema", "Quality issue", "Support devices",
        "Wide mediastinum",
    ]  # fmt: skip
    return "id,split,eye_tracking_data_discarded,image,dicom_id,subject_id,image_size_x,image_size_y," + ",".join(p1)


def expected_004_map(fix, window=(1.5, 5.0)) -> np.ndarray:
    """004's create_heatmap, written independently: clipped-duration weights, normalised 2-D normal
    pdf over the shown rect (here the whole image), max = 1."""
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W))
    w0, w1 = window
    for s, e, x, y in fix:
        if e > w0 and s <= w1:
            wgt = min(e, w1) - max(s, w0)
            img += wgt / (2 * np.pi * PPD * PPD) * np.exp(-((cc - x) ** 2 + (rr - y) ** 2) / (2 * PPD**2))
    return img / img.max()


def _native_recipe():
    return load_recipe("reflacx-label-specific").with_overrides(size="native", dtype="float32")


def _file_digests(root: Path) -> dict[str, str]:
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not rel.startswith(".parts") and "/.parts" not in rel and ".staging" not in rel:
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_hand_built_case_reproduces_004(tmp_path):
    info = write_hand_release(tmp_path / "rel")
    out = tmp_path / "out"
    summary = build_heatmaps(
        BuildOptions(
            dataset="reflacx", root=tmp_path / "rel", out=out, recipe=_native_recipe(), workers=1, progress=False
        )
    )
    from gazeprep import load_export

    ex = load_export(summary.out)
    win = ex.tables["windows"]
    assert win.height >= 1
    w = win.filter(win["target"] == "pleural_abnormality").row(0, named=True)
    assert w["t_start_s"] == pytest.approx(1.5, abs=1e-9)
    assert w["t_end_s"] == pytest.approx(5.0, abs=1e-9)
    expected = expected_004_map(info["fixations"])
    for target in ("pleural_abnormality", "atelectasis"):
        got = ex.heatmap(info["case"], target)
        assert got.shape == (H, W)
        assert np.abs(got - expected).max() < 1e-5
    # sentence 0 ("heart size is normal") is negated: no cardiac map; targets are 004's ten labels
    targets = set(ex.tables["heatmaps"]["target"].to_list())
    assert "enlarged_cardiac_silhouette" not in targets
    assert targets == {"pleural_abnormality", "atelectasis", "opacity"}


def test_workers_and_resume_are_byte_identical(tmp_path, monkeypatch):
    from gazeprep.paths import sample_data_dir

    root = sample_data_dir() / "reflacx"
    if not root.exists():
        pytest.skip("sample data not generated")
    recipe = load_recipe("reflacx-label-specific").with_overrides(size=64)
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    build_heatmaps(BuildOptions(dataset="reflacx", root=root, out=a, recipe=recipe, workers=1, progress=False))
    build_heatmaps(BuildOptions(dataset="reflacx", root=root, out=b, recipe=recipe, workers=2, progress=False))
    da, db = _file_digests(a), _file_digests(b)
    assert da and da == db

    # a build that dies after a few cases, then is rerun, ends byte-identical to an uninterrupted one
    import gazeprep.pipeline.build as build_mod

    real = build_mod._compute_case
    calls = {"n": 0}

    def dying(st, case_id, store):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("simulated kill")
        return real(st, case_id, store)

    monkeypatch.setattr(build_mod, "_compute_case", dying)
    with pytest.raises(KeyboardInterrupt):
        build_heatmaps(BuildOptions(dataset="reflacx", root=root, out=c, recipe=recipe, workers=1, progress=False))
    assert not (c / "manifest.json").exists()
    monkeypatch.setattr(build_mod, "_compute_case", real)
    s = build_heatmaps(BuildOptions(dataset="reflacx", root=root, out=c, recipe=recipe, workers=1, progress=False))
    assert s.n_reused == 3
    assert _file_digests(c) == da


def test_cli_on_sample_data(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "gazeprep", "build-heatmaps", "--dataset", "reflacx", "--out", str(out), "--size", "64"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bundled synthetic sample data" in proc.stderr
    from gazeprep import load_export

    ex = load_export(out)
    hm = ex.tables["heatmaps"]
    assert hm.height > 0
    first = hm.row(0, named=True)
    arr = ex.heatmap(first["case_id"], first["target"])
    assert arr.dtype == np.float32 and arr.shape == (64, 64)
    assert arr.max() == pytest.approx(1.0, abs=1e-6)


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gazeprep", "build-heatmaps", "--dataset", "reflacx", "--root", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:")
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_whole_recording_map_survives_a_missing_transcript(tmp_path):
    """EGD-CXR static maps need no text: a case whose transcript.json is missing still gets its
    map, with a rejects row saying the transcript was empty; a label-specific recipe would skip it."""
    import shutil

    from gazeprep.paths import sample_data_dir

    src = sample_data_dir() / "egd-cxr"
    if not src.exists():
        pytest.skip("sample data not generated")
    root = tmp_path / "egd"
    shutil.copytree(src, root)
    victim_dir = sorted(p for p in (root / "audio_segmentation_transcripts").iterdir() if p.is_dir())[0]
    (victim_dir / "transcript.json").unlink()
    victim = victim_dir.name
    recipe = load_recipe("egd-static").with_overrides(size=32)
    s = build_heatmaps(
        BuildOptions(dataset="egd-cxr", root=root, out=tmp_path / "out", recipe=recipe, workers=1, progress=False)
    )
    from gazeprep import load_export

    ex = load_export(s.out)
    assert victim in set(ex.tables["heatmaps"]["case_id"].to_list())
    assert ex.heatmap(victim, "full").max() == pytest.approx(1.0)
    rej = ex.tables["rejects"].filter(ex.tables["rejects"]["case_id"] == victim)
    assert any("transcript" in r for r in rej["reason"].to_list())
