"""`gazeprep train` / `gazeprep predict` end to end on a small export written by the export layer."""

import numpy as np
import polars as pl
from PIL import Image

from gazeprep import schema
from gazeprep.cli import main
from gazeprep.train.synthetic import make_synthetic_export


def _cli(args) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _write_export(tmp_path, n=12):
    from gazeprep.export import CaseResult, finalize

    mem = make_synthetic_export(n)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    cases = mem.tables["cases"]
    paths = []
    for cid in cases["case_id"]:
        Image.fromarray((mem.images[cid] * 255).round().astype(np.uint8)).save(img_dir / f"{cid}.png")
        paths.append(f"{cid}.png")
    cases = schema.conform(cases.with_columns(pl.Series("image_path", paths)), "cases")
    labels = schema.conform(mem.tables["case_labels"], "case_labels")
    results = []
    for cid in cases["case_id"]:
        maps = {t: a for (c, t), a in mem.heatmaps.items() if c == cid}
        results.append(
            CaseResult(
                cid,
                f"h-{cid}",
                {
                    "cases": cases.filter(pl.col("case_id") == cid),
                    "case_labels": labels.filter(pl.col("case_id") == cid),
                },
                maps,
                [],
            )
        )
    out = finalize(tmp_path / "export", results, recipe=None, fsync=False)
    return out, img_dir, mem


def test_train_then_predict_writes_a_readable_prediction_export(tmp_path, capsys):
    from gazeprep.export import load_export

    export, images, mem = _write_export(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "preset: tiny\ndata:\n  size: 48\n  targets: [full]\n  labels: [disc, ring, bar]\ntrain:\n  batch_size: 4\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    code = _cli(
        [
            "train",
            "--model",
            "karargyris-unet",
            "--export",
            str(export),
            "--config",
            str(cfg),
            "--epochs",
            "2",
            "--out",
            str(run),
            "--images-root",
            str(images),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    assert (run / "model.pt").is_file() and (run / "checkpoint.pt").is_file() and (run / "run.yaml").is_file()
    pred = tmp_path / "pred"
    code = _cli(
        [
            "predict",
            "--model-dir",
            str(run),
            "--export",
            str(export),
            "--out",
            str(pred),
            "--images-root",
            str(images),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 0
    p = load_export(pred)
    gt = load_export(export)
    assert p.kind == "prediction"
    cid = p.tables["cases"]["case_id"][0]  # predict covers the run's test split by default
    a, b = p.heatmap(cid, "full"), gt.heatmap(cid, "full")
    assert a.shape == b.shape == (48, 40)  # mapped back to the ground truth's frame (letterbox undone)
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1


def test_train_reports_bad_input_in_one_line(tmp_path, capsys):
    assert _cli(["train", "--model", "no-such-model", "--export", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochz: 3}\n", encoding="utf-8")
    export, images, _ = _write_export(tmp_path, n=6)
    assert (
        _cli(
            [
                "train",
                "--model",
                "ggcam-resnet50",
                "--export",
                str(export),
                "--config",
                str(bad),
                "--preset",
                "tiny",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "epochz" in capsys.readouterr().err
