"""Checks before work: a model trained on an export that lacks its targets or labels stops with one
``error:`` line (exit 1) naming what it needs, what the export has and the recipe to build; a training
set with nothing to learn from is an error, never a 0-loss "success"."""

import polars as pl
import pytest
from _run_exports import cli, tiny_config, write_export

from gazeprep.errors import GazeprepError


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    t = tmp_path_factory.mktemp("exports")
    return {k: write_export(t, k) for k in ("egd", "reflacx")}


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "arch, kind, recipe",
    [
        ("karargyris-unet", "reflacx", "egd-static"),  # measured on main: trained 8 epochs with loss 0
        ("ggcam-resnet50", "reflacx", "egd-gaze-samples-max"),  # ce = 0, sm = 0
        ("qiu-dual-unet", "reflacx", "egd-gaze-samples-max"),
        ("lanfredi-mil", "egd", "reflacx-label-specific"),  # died with a RuntimeError in train/losses.py
    ],
)
def test_wrong_export_is_one_error_line(exports, tmp_path, capsys, arch, kind, recipe):
    export, images = exports[kind]
    run = tmp_path / "run"
    code = cli(
        [
            "train",
            "--arch",
            arch,
            "--export",
            export,
            "--config",
            tiny_config(tmp_path),
            "--out",
            run,
            "--images",
            images,
            "--device",
            "cpu",
            "--quiet",
            "--epochs",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    line = _one_error_line(err)
    assert f"{arch} needs" in line
    assert f"recipe {recipe}" in line  # which recipe produces what it needs
    other = "egd-static" if kind == "egd" else "reflacx-label-specific"
    assert f"recipe {other}" in line  # what the export is
    if kind == "reflacx":
        assert "heatmaps of target full" in line and "edema" in line  # needed vs present
    else:
        assert "edema" in line and "heatmap targets full" in line
    assert not (run / "run.yaml").exists() and not (run / "checkpoint.pt").exists()  # nothing written
    assert "trained" not in out


def test_matching_export_trains(exports, tmp_path, capsys):
    export, images = exports["egd"]
    code = cli(
        [
            "train",
            "--arch",
            "karargyris-unet",
            "--export",
            export,
            "--config",
            tiny_config(tmp_path),
            "--out",
            tmp_path / "run",
            "--images",
            images,
            "--device",
            "cpu",
            "--quiet",
            "--epochs",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "trained karargyris-unet" in out


def _mem(n=12, **kw):
    from gazeprep.train.synthetic import make_synthetic_export

    return make_synthetic_export(n, **kw)


def test_labels_without_one_class_per_case_are_refused(tmp_path):
    """A one-class-per-case model (GG-CAM) on cases where every label is 0 has no class to learn."""
    from gazeprep.train.run import train_run

    ex = _mem()
    ex.tables["case_labels"] = ex.tables["case_labels"].with_columns(pl.lit(0.0).alias("value"))
    cfg = {"preset": "tiny", "data": {"size": 32, "labels": ["disc", "ring", "bar"]}}
    with pytest.raises(GazeprepError, match=r"one of the classes disc, ring, bar per case"):
        train_run("ggcam-resnet50", ex, tmp_path / "run", cfg, device="cpu", epochs=1, progress=False)


def test_nothing_to_learn_from_is_an_error(tmp_path):
    from gazeprep.train.run import train_run

    cfg = {"preset": "tiny", "data": {"size": 32, "targets": [], "labels": []}}
    with pytest.raises(GazeprepError, match="nothing to train on"):
        train_run("karargyris-unet", _mem(), tmp_path / "run", cfg, device="cpu", epochs=1, progress=False)
    ex = _mem()
    ex.tables["cases"] = ex.tables["cases"].with_columns(pl.lit(True).alias("discarded"))
    with pytest.raises(GazeprepError, match="no cases"):
        train_run("karargyris-unet", ex, tmp_path / "run2", {"preset": "tiny"}, device="cpu", epochs=1, progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_empty_training_split_is_an_error(tmp_path):
    from gazeprep.train.run import train_run

    ex = _mem()
    ex.tables["cases"] = ex.tables["cases"].with_columns(pl.lit("test").alias("split"))
    cfg = {"preset": "tiny", "data": {"size": 32, "labels": ["disc", "ring", "bar"]}}
    with pytest.raises(GazeprepError, match="training split .* is empty"):
        train_run("karargyris-unet", ex, tmp_path / "run", cfg, device="cpu", epochs=1, progress=False)


def test_check_export_counts_only_training_cases():
    """Maps that exist only outside the training split do not make the export usable."""
    from gazeprep.train.models import resolve_config
    from gazeprep.train.run import check_export, resolve_data

    ex = _mem(12, unannotated=6)  # cases 6..11 have labels but no maps
    cfg = resolve_config("karargyris-unet", {"preset": "tiny", "data": {"labels": ["disc", "ring", "bar"]}})
    resolve_data("karargyris-unet", cfg)
    assert check_export("karargyris-unet", cfg, ex, [f"case{i:03d}" for i in range(6)]) == []
    with pytest.raises(GazeprepError, match="heatmaps of target full"):
        check_export("karargyris-unet", cfg, ex, [f"case{i:03d}" for i in range(6, 12)])
    # a target no training case has is a warning, not an error
    cfg["data"]["targets"] = ["full", "ring"]
    warnings = check_export("karargyris-unet", cfg, ex, ["case000", "case002"])  # classes disc, bar
    assert len(warnings) == 1 and "ring" in warnings[0]


def test_models_lists_recipe_and_targets(capsys):
    assert cli(["models"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("lanfredi-mil") :].splitlines()
    assert "recipe reflacx-label-specific on reflacx" in block[1] and "one heatmap per label" in block[1]
    kar = out[out.index("karargyris-unet") :].splitlines()[1]
    assert "recipe egd-static on egd-cxr" in kar and "heatmap targets full" in kar and "normal, chf, pneumonia" in kar


def test_missing_images_stop_before_training(exports, tmp_path, capsys):
    """The image source is checked up front: a folder without the cases' images is one error line."""
    export, _ = exports["egd"]
    empty = tmp_path / "no-images"
    empty.mkdir()
    run = tmp_path / "run"
    code = cli(
        [
            "train",
            "--arch",
            "karargyris-unet",
            "--export",
            export,
            "--config",
            tiny_config(tmp_path),
            "--out",
            run,
            "--images",
            empty,
            "--device",
            "cpu",
            "--quiet",
            "--epochs",
            "1",
        ]
    )
    assert code == 1
    assert "not found" in _one_error_line(capsys.readouterr().err)
    assert not run.exists()
