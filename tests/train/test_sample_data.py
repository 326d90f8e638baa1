"""End to end on the bundled sample data: build-heatmaps -> train -> predict -> the evaluator reads it."""

import numpy as np
import polars as pl
import pytest

from gazeprep.paths import sample_data_dir

SAMPLE = sample_data_dir()
pytestmark = pytest.mark.skipif(
    not (SAMPLE / "egd-cxr").is_dir() or not (SAMPLE / "mimic-cxr").is_dir(), reason="sample data not generated"
)


def _build(dataset, out):
    from gazeprep.cli import main

    try:
        main(["build-heatmaps", "--dataset", dataset, "--out", str(out), "--workers", "1"])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_egd_sample_train_predict(tmp_path):
    from gazeprep.export import load_export
    from gazeprep.train.run import predict_run, train_run

    export = _build("egd-cxr", tmp_path / "egd")
    cfg = {"preset": "tiny", "data": {"size": 48}, "train": {"batch_size": 4}}
    hist = train_run(
        "ggcam-resnet50",
        export,
        tmp_path / "run",
        cfg,
        device="cpu",
        epochs=2,
        images_root=SAMPLE / "mimic-cxr",
        progress=False,
    )
    assert len(hist) == 2 and all(np.isfinite(r["train_loss"]) for r in hist)
    # labels came from the release (Normal / CHF / pneumonia columns): every case has one class
    pred = predict_run(
        tmp_path / "run", export, tmp_path / "pred", device="cpu", images_root=SAMPLE / "mimic-cxr", progress=False
    )
    p, g = load_export(pred), load_export(export)
    test_ids = p.tables["cases"]["case_id"].to_list()  # predict covers the run's test split by default
    saved = pl.read_parquet(tmp_path / "run" / "splits.parquet")
    assert test_ids and set(test_ids) == set(saved.filter(pl.col("split") == "test")["case_id"].to_list())
    for cid in test_ids[:3]:
        assert p.heatmap(cid, "full").shape == g.heatmap(cid, "full").shape
    from gazeprep.evaluate import metrics  # the evaluation area reads the prediction export's maps

    cid = test_ids[0]
    assert np.isfinite(metrics.cc(p.heatmap(cid, "full"), g.heatmap(cid, "full")))


def test_reflacx_sample_lanfredi_labels_from_release(tmp_path):
    from gazeprep.export import load_export
    from gazeprep.train.data import GazeDataset
    from gazeprep.train.models import REFLACX_LABELS

    export = load_export(_build("reflacx", tmp_path / "rfx"))
    ds = GazeDataset(export, targets=REFLACX_LABELS, labels=REFLACX_LABELS, size=48, image_root=SAMPLE / "mimic-cxr")
    assert np.isfinite(ds.label_matrix).any()  # canonical labels were mapped from the release's columns
    s = ds[0]
    assert s["image"].shape == (3, 48, 48) and s["heatmaps"].shape == (len(REFLACX_LABELS), 48, 48)


def test_egd_sample_masks_follow_the_image(tmp_path):
    from gazeprep.export import load_export
    from gazeprep.train.data import GazeDataset

    export = load_export(_build("egd-cxr", tmp_path / "egd"))
    ds = GazeDataset(
        export,
        targets=["full"],
        labels=[],
        size=48,
        image_root=SAMPLE / "mimic-cxr",
        mask_structures=["left_lung", "right_lung"],
        masks_root=SAMPLE / "egd-cxr",
    )
    s = ds[0]
    left, right = s["masks"][0].numpy(), s["masks"][1].numpy()
    assert left.sum() > 20 and right.sum() > 20 and float((left * right).sum()) == 0  # two disjoint lungs
    # the patient's left lung is on the image's right side
    cols = np.arange(48, dtype=np.float32)
    assert float((left.sum(0) * cols).sum() / left.sum()) > float((right.sum(0) * cols).sum() / right.sum())
