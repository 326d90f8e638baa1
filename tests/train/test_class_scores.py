"""predict: the run's test split by default (--split all|train|val|test), class scores written beside
the maps; evaluate prints per-label and macro AUC (and accuracy for one class per case) beside the
map metrics."""

import numpy as np
import polars as pl
import pytest
from _run_exports import EGD_NAMES, cli, tiny_config, write_export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GG-CAM tiny run on an EGD-shaped export of 20 cases (fallback subject split)."""
    t = tmp_path_factory.mktemp("run")
    export, images = write_export(t, "egd", n=20)
    run = t / "run"
    code = cli(
        [
            "train",
            "--arch",
            "ggcam-resnet50",
            "--export",
            export,
            "--config",
            tiny_config(t, train={"epochs": 2}),
            "--out",
            run,
            "--images",
            images,
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    return export, images, run, t


def _predict(trained, out, *extra):
    export, images, run, _ = trained
    return cli(
        [
            "predict",
            "--model",
            run,
            "--export",
            export,
            "--out",
            out,
            "--images",
            images,
            "--device",
            "cpu",
            "--quiet",
            *extra,
        ]
    )


def test_predict_defaults_to_the_test_split(trained, tmp_path, capsys):
    from gazeprep.export import load_export

    export, _, run, _ = trained
    splits = pl.read_parquet(run / "splits.parquet")
    assert _predict(trained, tmp_path / "p") == 0
    assert "of the test cases" in capsys.readouterr().out
    p = load_export(tmp_path / "p")
    test_ids = set(splits.filter(pl.col("split") == "test")["case_id"])
    assert test_ids and set(p.tables["heatmaps"]["case_id"]) == test_ids
    assert _predict(trained, tmp_path / "v", "--split", "val") == 0
    assert set(load_export(tmp_path / "v").tables["heatmaps"]["case_id"]) == set(
        splits.filter(pl.col("split") == "validate")["case_id"]
    )
    assert _predict(trained, tmp_path / "a", "--split", "all") == 0
    assert load_export(tmp_path / "a").tables["heatmaps"]["case_id"].n_unique() == 20
    assert _predict(trained, tmp_path / "x", "--split", "holdout") == 2


def test_predict_on_a_foreign_export_needs_split_all(trained, tmp_path, capsys):
    _, _, run, _ = trained
    other, images = write_export(tmp_path, "egd", n=6, name="other", prefix="other-")
    base = ["predict", "--model", run, "--export", other, "--images", images, "--device", "cpu", "--quiet"]
    assert cli([*base, "--out", tmp_path / "p"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: none of the run's") and "--split all" in err and len(err.strip().splitlines()) == 1
    assert cli([*base, "--out", tmp_path / "q", "--split", "all"]) == 0


def test_class_scores_table_and_evaluate_prints_auc(trained, tmp_path, capsys):
    from gazeprep.export import load_export

    export, _, run, _ = trained
    assert _predict(trained, tmp_path / "p", "--split", "all") == 0
    capsys.readouterr()
    p = load_export(tmp_path / "p")
    sc = p.tables["class_scores"]
    assert sc.columns == ["case_id", "label", "score", "truth"]
    assert sc.height == 20 * 3 and set(sc["label"]) == set(EGD_NAMES)
    assert sc["score"].min() >= 0 and sc["score"].max() <= 1
    sums = sc.group_by("case_id").agg(pl.col("score").sum())["score"].to_numpy()
    assert np.allclose(sums, 1.0, atol=1e-5)  # GG-CAM: softmax over its three classes
    # truth from the export's labels: the synthetic class of case i is i % 3, renamed to the EGD classes
    truth = sc.filter(pl.col("truth") == 1.0).sort("case_id")
    assert truth.height == 20
    assert truth["label"].to_list() == [EGD_NAMES[i % 3] for i in range(20)]
    assert p.manifest["extra"]["class_scores"] == {"activation": "softmax", "labels": list(EGD_NAMES)}

    code = cli(
        [
            "evaluate",
            "--pred",
            tmp_path / "p",
            "--gt",
            export,
            "--metrics",
            "cc,auc,accuracy",
            "--n-boot",
            "50",
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "auc↑" in out and "accuracy↑" in out and "cc↑" in out
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    for lab in EGD_NAMES:
        assert lab in rows  # a row per class with its AUC
    assert "mean over labels" in out  # the macro AUC


def test_multilabel_model_writes_sigmoid_scores(tmp_path, capsys):
    """004 (MIL) on a REFLACX-shaped export: one independent probability per label."""
    from _run_exports import REFLACX_NAMES

    from gazeprep.export import load_export

    export, images = write_export(tmp_path, "reflacx", n=12)
    cfg = tiny_config(tmp_path, data={"labels": list(REFLACX_NAMES)}, train={"epochs": 1})
    run = tmp_path / "run"
    assert (
        cli(
            [
                "train",
                "--arch",
                "lanfredi-mil",
                "--export",
                export,
                "--config",
                cfg,
                "--out",
                run,
                "--images",
                images,
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        cli(
            [
                "predict",
                "--model",
                run,
                "--export",
                export,
                "--out",
                tmp_path / "p",
                "--images",
                images,
                "--device",
                "cpu",
                "--quiet",
                "--split",
                "all",
            ]
        )
        == 0
    )
    p = load_export(tmp_path / "p")
    assert p.manifest["extra"]["class_scores"]["activation"] == "sigmoid"
    sc = p.tables["class_scores"]
    assert sc.height == 12 * 3 and sc["score"].is_between(0, 1).all()
    assert sc.filter(pl.col("truth") == 1.0).height == 12  # one positive label per synthetic case
    # the maps are the labels' own targets, as 004's decoder outputs
    assert set(p.tables["heatmaps"]["target"]) == set(REFLACX_NAMES)
