"""Paper 004's weak labels: label-only MIMIC-CXR images in the training split (issue 14 item 5).

Known answers are counted by hand from the tables of ``sample_data/mimic-cxr`` (12 images, one per
study, all frontal: 8 in MIMIC's ``train`` split) and of a tiny MIMIC folder written here, whose rows
exercise every selection rule and every label value (1, 0, -1, blank).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from gazeprep.errors import GazeprepError
from gazeprep.paths import sample_data_dir

torch = pytest.importorskip("torch")

from _run_exports import cli, tiny_config, write_export  # noqa: E402

from gazeprep.train.run import train_run  # noqa: E402
from gazeprep.train.synthetic import make_synthetic_export  # noqa: E402
from gazeprep.train.weak import WithLabelOnly, select_weak_labels, weak_labels_for_run  # noqa: E402

SAMPLE = sample_data_dir() / "mimic-cxr"
#: 004's ten labels (list_labels.py order), as gazeprep's canonical ids
TEN = [
    "edema",
    "opacity",
    "pneumothorax",
    "pleural_abnormality",
    "lung_lesion",
    "atelectasis",
    "consolidation",
    "fracture",
    "enlarged_cardiac_silhouette",
    "abnormal_mediastinal_contour",
]
# sample_data/mimic-cxr images (dicom_id prefixes) and their (subject, study)
D_12167311_A = "37aaa1c8-60062588-a6fee30c-992e3876-55054228"  # train, Pleural Effusion 1
D_12167311_B = "5eb00b61-202affee-6843d9e1-4812f9e4-a1222357"  # train, No Finding 1
D_13382225 = "a60c67ad-e96b30a7-afb2829b-b147f1a3-6cb997e7"  # train
D_16943510 = "f53d3ecc-26886296-667228b0-8a24fdfa-2d5628ac"  # train, Atelectasis 1, Pleural Other 1
D_17177516_A = "f4d36ebd-3d860e57-4b27a0db-1410ebb4-54f93ae9"  # train
D_17177516_B = "81b315a8-377bef9a-2ae4afca-57be05c3-2eff6120"  # train
D_18680445 = "96b99a8c-e3095520-7cde8e10-9105b609-715be531"  # train
D_19843257 = "42c6172b-7ab18aac-84657ec1-e5bfc99c-cc9ed315"  # train, Cardiomegaly -1, Consolidation 1, Pneumothorax 1


def _row(*present: str) -> list[float]:
    return [1.0 if lab in present else 0.0 for lab in TEN]


def _sample_export(n: int = 8):
    """A REFLACX-like in-memory export whose cases are sample MIMIC images: case0 is the image
    D_12167311_A (train), case4 a validate case of subject 17177516, case6 a test case of a subject
    MIMIC does not hold; maps and labels of disc/ring/bar renamed to edema/atelectasis/consolidation."""
    ex = make_synthetic_export(n, height=48, width=40)
    rename = {"disc": "edema", "ring": "atelectasis", "bar": "consolidation"}
    ex.heatmaps = {(c, rename.get(t, t)): a for (c, t), a in ex.heatmaps.items()}
    ex.tables["heatmaps"] = ex.tables["heatmaps"].with_columns(pl.col("target").replace(rename))
    ex.tables["case_labels"] = ex.tables["case_labels"].with_columns(pl.col("source_label").replace(rename))
    split = ["train"] * 4 + ["validate"] * 2 + ["test"] * 2
    subjects = [12167311, 101, 102, 103, 17177516, 104, 99999999, 105]
    images = [D_12167311_A] + [f"img{i}" for i in range(1, n)]
    ex.tables["cases"] = ex.tables["cases"].with_columns(
        pl.Series("split", split, dtype=pl.Utf8), pl.Series("subject_id", subjects), pl.Series("image_id", images)
    )
    return ex


# ----------------------------------------------------------------------------------------------
# selection and labels


def test_sample_root_counts_and_labels():
    """All 8 MIMIC train images, none of the 4 validate/test ones; labels mapped by labels.yaml."""
    w = select_weak_labels(SAMPLE, "chexpert", TEN)
    assert w.cases.height == 8
    assert w.excluded["mimic_split_not_train"] == 4
    assert set(w.cases["split"].to_list()) == {"train"}
    rows = dict(zip(w.cases["case_id"].to_list(), w.label_matrix.tolist()))
    # Cardiomegaly -1 (uncertain: present, 004's abs(x) > 0), Consolidation 1 (+ Opacity), Pneumothorax 1
    assert rows[D_19843257] == _row("enlarged_cardiac_silhouette", "consolidation", "opacity", "pneumothorax")
    # Atelectasis 1 (+ Opacity), Pleural Other 1 (-> Pleural abnormality); Consolidation 0, Effusion 0
    assert rows[D_16943510] == _row("atelectasis", "opacity", "pleural_abnormality")
    # No Finding 1, the rest 0 or blank: every label 0 (blank read as 0, as 004's code)
    assert rows[D_12167311_B] == _row()
    assert w.record()["cases"] == 8 and w.record()["labeler"] == "chexpert" and len(w.record()["table_sha256"]) == 64


def test_run_exclusions_no_leak():
    """An export image (same dicom_id) and the images of a validate subject are left out."""
    ex = _sample_export()
    cases = ex.tables["cases"]
    splits = {s: cases.filter(pl.col("split") == s)["case_id"].to_list() for s in ("train", "validate", "test")}
    w = weak_labels_for_run(SAMPLE, "chexpert", TEN, cases, splits)
    got = set(w.cases["case_id"].to_list())
    assert got == {D_12167311_B, D_13382225, D_16943510, D_18680445, D_19843257}
    assert w.excluded["export_image"] == 1 and w.excluded["held_out_subject"] == 2
    held = set(cases.filter(pl.col("split") != "train")["subject_id"].cast(pl.Utf8).to_list())
    assert not held & set(w.cases["subject_id"].cast(pl.Utf8).to_list())
    assert not set(cases["image_id"].to_list()) & got


def _write_tiny_mimic(root: Path, negbio_pneumothorax: float | None = 1.0) -> None:
    """Six images: s1 PA (train), s2 PA + LATERAL (train), s3 two AP (train, two frontals), s4 PA
    (validate), s5 PA (train, study absent from the label tables), s6 AP (train)."""
    from PIL import Image

    meta = [
        ("d1", 11000001, 51, "PA"),
        ("d2", 11000002, 52, "PA"),
        ("d2lat", 11000002, 52, "LATERAL"),
        ("d3a", 11000003, 53, "AP"),
        ("d3b", 11000003, 53, "AP"),
        ("d4", 11000004, 54, "PA"),
        ("d5", 11000005, 55, "PA"),
        ("d6", 11000006, 56, "AP"),
    ]
    split = {"d4": "validate"}
    root.mkdir(parents=True)
    head = (
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
        "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning\n"
    )
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(
        head + "".join(f"{d},{s},{st},CHEST,{v},48,40,21000101,1.0,CHEST,x,Erect\n" for d, s, st, v in meta)
    )
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n"
        + "".join(f"{d},{st},{s},{split.get(d, 'train')}\n" for d, s, st, _ in meta)
    )
    cols = [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Enlarged Cardiomediastinum",
        "Fracture",
        "Lung Lesion",
        "Lung Opacity",
        "No Finding",
        "Pleural Effusion",
        "Pleural Other",
        "Pneumonia",
        "Pneumothorax",
        "Support Devices",
    ]

    def table(pneumo6: float | None) -> str:
        rows = {
            (11000001, 51): {"Edema": 1.0, "Fracture": -1.0, "Enlarged Cardiomediastinum": 0.0},
            (11000002, 52): {"Lung Lesion": -1.0, "Pneumonia": 1.0},
            (11000003, 53): {"Edema": 1.0},
            (11000004, 54): {"Edema": 1.0},
            (11000006, 56): {"Pneumothorax": pneumo6, "Enlarged Cardiomediastinum": 1.0},
        }
        out = ",".join(["subject_id", "study_id", *cols]) + "\n"
        for (s, st), vals in rows.items():
            cells = ["" if vals.get(c) is None else str(vals[c]) for c in cols]
            out += ",".join([str(s), str(st), *cells]) + "\n"
        return out

    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(table(1.0))
    (root / "mimic-cxr-2.0.0-negbio.csv").write_text(table(negbio_pneumothorax))
    for d, s, st, _ in meta:
        p = root / f"files/p{str(s)[:2]}/p{s}/s{st}/{d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 40), 90, np.uint8)).save(p)


def test_tiny_mimic_rules_and_values(tmp_path):
    root = tmp_path / "mimic"
    _write_tiny_mimic(root, negbio_pneumothorax=None)
    w = select_weak_labels(root, "chexpert", TEN)
    # d1 kept; d2 kept (its lateral is not frontal: one frontal in the study); d3a/d3b dropped (two
    # frontals); d4 validate; d5 unlabelled study; d6 kept
    assert w.cases["case_id"].to_list() == ["d1", "d2", "d6"]
    assert w.excluded == {
        "unlabelled_study": 1,
        "mimic_split_not_train": 1,
        "not_single_frontal": 3,
        "export_image": 0,
        "held_out_subject": 0,
    }
    rows = dict(zip(w.cases["case_id"].to_list(), w.label_matrix.tolist()))
    assert rows["d1"] == _row("edema", "opacity", "fracture")  # Edema 1 (+Opacity), Fracture -1; ECM 0
    assert rows["d2"] == _row("lung_lesion", "opacity")  # Lung Lesion -1 (+Opacity); Pneumonia 1 -> Opacity
    assert rows["d6"] == _row("pneumothorax", "abnormal_mediastinal_contour")
    n = select_weak_labels(root, "negbio", TEN)
    rows_n = dict(zip(n.cases["case_id"].to_list(), n.label_matrix.tolist()))
    assert rows_n["d6"] == _row("abnormal_mediastinal_contour")  # blank Pneumothorax: 0, not unknown
    assert n.identity["table_sha256"] != w.identity["table_sha256"]
    # a label no column maps to is unknown (NaN: the loss ignores it), not negative
    odd = select_weak_labels(root, "chexpert", ["edema", "hiatal_hernia"])
    assert odd.label_matrix[:, 0].tolist() == [1.0, 0.0, 0.0] and np.isnan(odd.label_matrix[:, 1]).all()


def test_missing_root_or_table(tmp_path):
    with pytest.raises(GazeprepError, match="MIMIC-CXR root not found"):
        select_weak_labels(tmp_path / "nope", "chexpert", TEN)
    root = tmp_path / "mimic"
    _write_tiny_mimic(root)
    (root / "mimic-cxr-2.0.0-negbio.csv").unlink()
    with pytest.raises(GazeprepError, match="mimic-cxr-2.0.0-negbio.csv"):
        select_weak_labels(root, "negbio", TEN)


# ----------------------------------------------------------------------------------------------
# training


def _tiny_cfg() -> dict:
    return {
        "preset": "tiny",
        "data": {"size": 32},
        "train": {"batch_size": 3},
    }  # 9 items: no batch of 1 for the BN recalibration


def test_train_with_weak_labels(tmp_path, monkeypatch):
    """Label-only items have annotated False, zero maps and the table's labels; a few steps give a
    finite loss; run.yaml records the source; another labeler is another config."""
    import gazeprep.train.run as run_mod

    seen: dict = {}
    real_fit = run_mod.fit

    def spy(net, objective, data, tc, val_data=None):
        seen["data"] = data
        return real_fit(net, objective, data, tc, val_data=val_data)

    monkeypatch.setattr(run_mod, "fit", spy)
    ex = _sample_export()
    out = tmp_path / "run"
    history = train_run(
        "lanfredi-mil",
        ex,
        out,
        _tiny_cfg(),
        device="cpu",
        epochs=1,
        progress=False,
        weak_labels=SAMPLE,
        weak_labeler="chexpert",
    )
    data = seen["data"]
    assert isinstance(data, WithLabelOnly) and data.n_annotated == 4 and len(data) == 4 + 5
    assert all(math.isfinite(v) for h in history for k, v in h.items() if isinstance(v, float))
    batch = data.__getitems__([0, 4, 8])
    ids = [it["case_id"] for it in batch]
    assert ids[0] == "case000" and ids[1] == D_12167311_B and ids[2] == D_19843257
    assert [bool(it["annotated"]) for it in batch] == [True, False, False]
    assert float(batch[1]["heatmaps"].abs().sum()) == 0.0
    assert batch[2]["labels"].tolist() == _row(
        "enlarged_cardiac_silhouette", "consolidation", "opacity", "pneumothorax"
    )
    assert batch[1]["labels"].tolist() == _row()
    item = data[8]  # the per-item path agrees
    assert item["case_id"] == D_19843257 and not bool(item["annotated"]) and item["index"] == 8
    info = yaml.safe_load((out / "run.yaml").read_text())
    wl = info["weak_labels"]
    assert wl["root"] == "mimic-cxr" and wl["labeler"] == "chexpert" and wl["cases"] == 5
    assert wl["table"] == "mimic-cxr-2.0.0-chexpert.csv.gz" and len(wl["table_sha256"]) == 64
    notes: list[str] = []
    again = train_run(
        "lanfredi-mil",
        ex,
        out,
        _tiny_cfg(),
        device="cpu",
        epochs=1,
        progress=False,
        weak_labels=SAMPLE,
        weak_labeler="chexpert",
        notify=notes.append,
    )  # the same weak-label source is the same run: complete, nothing trained again
    assert len(again) == len(history) and any("is complete" in n for n in notes), notes
    with pytest.raises(GazeprepError, match="weak_labels: chexpert of mimic-cxr"):
        train_run(
            "lanfredi-mil",
            ex,
            out,
            _tiny_cfg(),
            device="cpu",
            epochs=1,
            progress=False,
            weak_labels=SAMPLE,
            weak_labeler="negbio",
        )
    with pytest.raises(GazeprepError, match="weak_labels: chexpert of mimic-cxr .* -> none"):
        train_run("lanfredi-mil", ex, out, _tiny_cfg(), device="cpu", epochs=1, progress=False)


# ----------------------------------------------------------------------------------------------
# CLI


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_refusals(tmp_path, capsys):
    export, images = write_export(tmp_path, "reflacx", n=8)
    cfg = tiny_config(tmp_path)
    base = [
        "train",
        "--export",
        export,
        "--config",
        cfg,
        "--images",
        images,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--quiet",
    ]
    assert cli([*base, "--arch", "ggcam-resnet50", "--out", tmp_path / "r1", "--weak-labels", SAMPLE]) == 1
    assert "paper 004" in _one_error_line(capsys)
    assert cli([*base, "--arch", "lanfredi-mil", "--out", tmp_path / "r2", "--weak-labels", tmp_path / "absent"]) == 1
    assert str(tmp_path / "absent") in _one_error_line(capsys)
    root = tmp_path / "mimic"
    _write_tiny_mimic(root)
    (root / "mimic-cxr-2.0.0-chexpert.csv").unlink()
    assert cli([*base, "--arch", "lanfredi-mil", "--out", tmp_path / "r3", "--weak-labels", root]) == 1
    assert "mimic-cxr-2.0.0-chexpert.csv" in _one_error_line(capsys)
    assert not (tmp_path / "r3" / "run.yaml").exists()


def test_cli_trains_with_weak_labels(tmp_path, capsys):
    export, images = write_export(tmp_path, "reflacx", n=8)
    cfg = tiny_config(tmp_path)
    out = tmp_path / "run"
    rc = cli(
        [
            "train",
            "--arch",
            "lanfredi-mil",
            "--export",
            export,
            "--config",
            cfg,
            "--images",
            images,
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            out,
            "--weak-labels",
            SAMPLE,
            "--weak-labeler",
            "negbio",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "label-only MIMIC-CXR images (negbio)" in captured.err
    wl = yaml.safe_load((out / "run.yaml").read_text())["weak_labels"]
    # the export's subjects are not MIMIC's and its images are not MIMIC images: all 8 train images join
    assert wl["labeler"] == "negbio" and wl["cases"] == 8


def test_cli_weak_labeler_needs_weak_labels(tmp_path, capsys):
    export, images = write_export(tmp_path, "reflacx", n=8)
    rc = cli(
        [
            "train",
            "--arch",
            "lanfredi-mil",
            "--export",
            export,
            "--images",
            images,
            "--out",
            tmp_path / "r",
            "--weak-labeler",
            "negbio",
        ]
    )
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "Error:" in line]  # typer's usage block: one message
    assert rc == 2 and len(errors) == 1 and "--weak-labels MIMIC_ROOT" in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()
