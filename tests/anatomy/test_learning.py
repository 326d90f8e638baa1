"""The tiny SAMed learns chest phantoms; train -> predict -> load_anatomy_masks through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from gazeprep.anatomy.data import labels_from_masks, resize_float, resize_labels  # noqa: E402
from gazeprep.anatomy.masks import load_anatomy_masks  # noqa: E402
from gazeprep.anatomy.model import build_samed, preset  # noqa: E402
from gazeprep.anatomy.train import TrainSettings, evaluate, train_samed  # noqa: E402
from gazeprep.cli import main  # noqa: E402

from .phantoms import make_releases, phantom  # noqa: E402

pytestmark = pytest.mark.torch


def test_tiny_samed_dice_rises_clearly_with_training():
    rng = np.random.default_rng(0)
    cfg = preset("tiny")
    train = [phantom(rng) for _ in range(40)]
    x = np.stack([resize_float(img, cfg.image_size) for img, _ in train])
    y = np.stack([resize_labels(labels_from_masks(m, cfg.classes), cfg.image_size) for _, m in train])
    held = [(img, labels_from_masks(m, cfg.classes)) for img, m in (phantom(rng) for _ in range(8))]
    torch.manual_seed(0)
    model = build_samed(cfg)
    cpu = torch.device("cpu")
    before = evaluate(model, held, cpu)
    losses = train_samed(model, x, y, TrainSettings(epochs=30, batch_size=8), cpu, progress=False)
    after = evaluate(model, held, cpu)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert after["mean_dice"] > 0.5, after
    assert after["mean_dice"] > before["mean_dice"] + 0.3, (before, after)
    for s in ("left_lung", "right_lung", "mediastinum"):  # the structures the recipe uses
        assert after["per_structure"][s]["dice"] > 0.5, (s, after)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    return make_releases(tmp_path_factory.mktemp("rel"), n_egd=16, n_reflacx=5)


def _run(args):
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def test_train_then_predict_on_tiny_through_cli(releases, tmp_path, capsys):
    model_dir = tmp_path / "model"
    _run(
        [
            "anatomy",
            "train",
            "--dataset",
            "egd-cxr",
            "--root",
            str(releases["egd"]),
            "--images",
            str(releases["mimic"]),
            "--config",
            "tiny",
            "--out",
            str(model_dir),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
        ]
    )
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert set(metrics["per_structure"]) == {"left_lung", "right_lung", "mediastinum", "aortic_knob"}
    assert all(
        0.0 <= v["dice"] <= 1.0 and 0.0 <= v["iou"] <= v["dice"] + 1e-12 for v in metrics["per_structure"].values()
    )
    assert metrics["n_cases"] >= 1 and metrics["n_train"] + metrics["n_cases"] == 16
    # held out by subject: no subject in both
    held = set(metrics["held_out_image_ids"])
    assert held and len(held) == metrics["n_cases"]
    assert "mean Dice" in capsys.readouterr().out

    out = tmp_path / "anat"
    base = [
        "anatomy",
        "predict",
        "--model",
        str(model_dir),
        "--dataset",
        "reflacx",
        "--root",
        str(releases["reflacx"]),
        "--images",
        str(releases["mimic"]),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--mask-size",
        "64",
        "--device",
        "cpu",
    ]
    _run(base + ["--limit", "2"])
    idx = pl.read_parquet(out / "masks.parquet")
    assert idx["image_id"].n_unique() == 2 and idx.height == 8
    rows_before = idx.sort("row")["row"].to_list()
    _run(base)  # resumes: only the 3 remaining images
    assert "3 segmented, 2 already done" in capsys.readouterr().out
    idx = pl.read_parquet(out / "masks.parquet")
    assert idx["image_id"].n_unique() == 5 and idx.height == 20
    assert sorted(idx["row"].to_list()) == list(range(20))
    assert idx.sort("row")["row"].to_list()[:8] == rows_before
    assert set(idx["image_height_px"].to_list()) == {96}  # original size (one image is a DICOM)
    _run(base)  # nothing left to do
    assert "0 segmented, 5 already done" in capsys.readouterr().out

    image_id = next(iter(releases["reflacx_truth"]))
    m = load_anatomy_masks(out, image_id, (96, 80))
    assert set(m) == {"heart", "left_lung", "right_lung"} and all(v.shape == (96, 80) for v in m.values())


def test_predict_rejects_unreadable_images_and_goes_on(releases, tmp_path):
    model = build_samed(preset("tiny"))
    from gazeprep.anatomy.model import save_model
    from gazeprep.anatomy.predict import run_predict

    save_model(model, tmp_path / "m")
    mimic = tmp_path / "mimic"
    shutil.copytree(releases["mimic"], mimic)
    victim = next(iter(releases["reflacx_truth"]))
    for p in mimic.rglob(f"{victim}.*"):
        p.unlink()
    stats = run_predict(
        tmp_path / "m",
        "reflacx",
        releases["reflacx"],
        mimic,
        tmp_path / "a",
        batch_size=4,
        device="cpu",
        mask_size=32,
        progress=False,
    )
    assert stats["segmented"] == 4 and stats["rejected"] == 1
    rej = pl.read_parquet(tmp_path / "a" / "rejects.parquet")
    assert rej["case_id"].to_list() == [victim] and rej["stage"].to_list() == ["anatomy"]
    assert "metadata_phase_1.csv" in rej["file"][0] and rej["row"][0] == 1


def test_train_without_checkpoint_for_vit_b_is_a_user_error(releases, tmp_path):
    from gazeprep.anatomy.train import run_train
    from gazeprep.errors import GazeprepError

    with pytest.raises(GazeprepError, match="--checkpoint"):
        run_train(releases["egd"], releases["mimic"], tmp_path / "m", config="vit_b", progress=False)


def test_train_rejects_cases_without_masks_and_goes_on(releases, tmp_path):
    from gazeprep.anatomy.train import run_train

    egd = tmp_path / "egd"
    shutil.copytree(releases["egd"], egd)
    victim = releases["egd_ids"][3]
    (egd / "audio_segmentation_transcripts" / victim / "left_lung.png").unlink()
    metrics = run_train(
        egd,
        releases["mimic"],
        tmp_path / "m",
        config="tiny",
        settings=TrainSettings(epochs=1, batch_size=8),
        device="cpu",
        progress=False,
    )
    rej = pl.read_parquet(tmp_path / "m" / "rejects.parquet")
    assert rej["case_id"].to_list() == [victim]
    assert "left_lung" in rej["reason"][0] and rej["row"][0] == 4  # 4th data row of master_sheet.csv
    assert metrics["n_train"] + metrics["n_cases"] == 15 and metrics["n_rejected"] == 1


def test_predict_on_ray_writes_the_same_store_as_local(releases, tmp_path):
    ray = pytest.importorskip("ray")
    import hashlib

    from gazeprep.anatomy.model import save_model
    from gazeprep.anatomy.predict import run_predict

    torch.manual_seed(1)
    save_model(build_samed(preset("tiny")), tmp_path / "m")
    common = dict(batch_size=2, device="cpu", mask_size=32, progress=False)
    local = run_predict(tmp_path / "m", "reflacx", releases["reflacx"], releases["mimic"], tmp_path / "local", **common)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        dist = run_predict(
            tmp_path / "m",
            "reflacx",
            releases["reflacx"],
            releases["mimic"],
            tmp_path / "ray",
            executor="ray",
            **common,
        )
    finally:
        ray.shutdown()
    assert local["segmented"] == dist["segmented"] == 5

    def digests(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digests(tmp_path / "local") == digests(tmp_path / "ray")


def test_a_killed_predict_resumes_from_its_parts_to_the_same_store(releases, tmp_path, monkeypatch):
    """Blocks write parts; a run killed before the driver merged them leaves them on disk, and the
    next run merges them without segmenting those images again: the store equals an uninterrupted run's."""
    import hashlib

    import gazeprep.anatomy.predict as predict
    from gazeprep.anatomy.model import save_model

    torch.manual_seed(2)
    save_model(build_samed(preset("tiny")), tmp_path / "m")
    args = (tmp_path / "m", "reflacx", releases["reflacx"], releases["mimic"])
    common = dict(batch_size=1, device="cpu", mask_size=16, progress=False)
    predict.run_predict(*args, tmp_path / "whole", **common)

    real_merge = predict.merge_parts
    calls = []

    def killed_after_the_blocks(store, parts, dataset, classes):
        calls.append(len(parts))
        if len(calls) == 2:  # the merge after map_blocks: the driver dies here
            raise KeyboardInterrupt
        return real_merge(store, parts, dataset, classes)

    monkeypatch.setattr(predict, "merge_parts", killed_after_the_blocks)
    with pytest.raises(KeyboardInterrupt):
        predict.run_predict(*args, tmp_path / "killed", **common)
    monkeypatch.undo()
    assert calls == [0, 2]  # 5 images, blocks of 4: two parts, none merged
    assert len(list((tmp_path / "killed" / "parts").glob("*.npz"))) == 2
    assert not (tmp_path / "killed" / "masks.parquet").exists()

    def no_segmenting(spec, records):
        raise AssertionError(f"segmented again: {[r.image_id for r in records]}")

    monkeypatch.setattr(predict, "predict_block", no_segmenting)
    stats = predict.run_predict(*args, tmp_path / "killed", **common)
    assert stats["segmented"] == 0 and stats["skipped_done"] == 5
    assert not (tmp_path / "killed" / "parts").exists()

    def digests(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digests(tmp_path / "killed") == digests(tmp_path / "whole")
