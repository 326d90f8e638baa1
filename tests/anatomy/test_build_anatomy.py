"""Sample data end to end: synth -> `anatomy train` (tiny) -> `anatomy predict` -> `build-heatmaps
--recipe reflacx-anatomy`; every exported map is provably built only from fixations inside its mask."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

pytest.importorskip("torch")

from gazeprep.anatomy.masks import load_anatomy_masks  # noqa: E402
from gazeprep.cli import main  # noqa: E402
from gazeprep.heatmaps.render import render_case  # noqa: E402
from gazeprep.paths import sample_data_dir  # noqa: E402
from gazeprep.recipes import load_recipe  # noqa: E402

pytestmark = pytest.mark.torch


def _run(args):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    bundled = sample_data_dir()
    if all((bundled / d).is_dir() for d in ("reflacx", "egd-cxr", "mimic-cxr")):
        sd = bundled  # the bundled sample data, through the commands' default --root / --images
        roots = {"egd": [], "reflacx": []}
    else:  # not generated yet: the same releases as `make sample-data`, in tmp
        sd = base / "sd"
        _run(["synth", "--dataset", "mimic-cxr", "--out", sd / "mimic-cxr", "--cases", 12, "--seed", 7])
        _run(
            [
                "synth",
                "--dataset",
                "reflacx",
                "--out",
                sd / "reflacx",
                "--cases",
                12,
                "--seed",
                7,
                "--mimic-root",
                sd / "mimic-cxr",
            ]
        )
        _run(
            [
                "synth",
                "--dataset",
                "egd-cxr",
                "--out",
                sd / "egd-cxr",
                "--cases",
                8,
                "--seed",
                7,
                "--mimic-root",
                sd / "mimic-cxr",
            ]
        )
        roots = {
            "egd": ["--root", sd / "egd-cxr", "--images", sd / "mimic-cxr"],
            "reflacx": ["--root", sd / "reflacx", "--images", sd / "mimic-cxr"],
        }
    model = base / "model"
    _run(
        [
            "anatomy",
            "train",
            "--dataset",
            "egd-cxr",
            *roots["egd"],
            "--config",
            "tiny",
            "--out",
            model,
            "--epochs",
            3,
            "--batch-size",
            4,
            "--device",
            "cpu",
        ]
    )
    anatomy = base / "anatomy"
    _run(
        [
            "anatomy",
            "predict",
            "--model",
            model,
            "--dataset",
            "reflacx",
            *roots["reflacx"],
            "--out",
            anatomy,
            "--batch-size",
            4,
            "--mask-size",
            128,
            "--device",
            "cpu",
        ]
    )
    # manual corrections for every image: a heart box and a left-lung half (they take precedence)
    ids = pl.read_parquet(anatomy / "masks.parquet").select("image_id", "image_height_px", "image_width_px").unique()
    for image_id, h, w in ids.iter_rows():
        folder = anatomy / "overrides" / image_id
        folder.mkdir(parents=True)
        heart = np.zeros((h, w), np.uint8)
        heart[h // 2 : 4 * h // 5, w // 3 : 2 * w // 3] = 255
        Image.fromarray(heart).save(folder / "heart.png")
        left = np.zeros((h, w), np.uint8)
        left[h // 6 : 5 * h // 6, w // 2 + 5 :] = 255
        Image.fromarray(left).save(folder / "left_lung.png")
    out = base / "build"
    _run(
        [
            "build-heatmaps",
            "--dataset",
            "reflacx",
            "--root",
            sd / "reflacx",
            "--recipe",
            "reflacx-anatomy",
            "--out",
            out,
            "--anatomy-dir",
            anatomy,
            "--workers",
            1,
        ]
    )
    return {"out": out, "anatomy": anatomy}


def test_anatomy_recipe_maps_use_only_fixations_inside_the_mask(built):
    import zarr

    out, anatomy = built["out"], built["anatomy"]
    recipe = load_recipe("reflacx-anatomy")
    index = pl.read_parquet(out / "tables" / "heatmaps.parquet")
    windows = pl.read_parquet(out / "tables" / "windows.parquet")
    fixations = pl.read_parquet(out / "tables" / "fixations.parquet")
    cases = pl.read_parquet(out / "tables" / "cases.parquet")
    store = zarr.open_group(str(out / "heatmaps.zarr"), mode="r")
    assert index.height >= 3
    assert {"heart", "left_lung"} <= set(index["target"].to_list())
    dropped_total = 0
    for row in index.iter_rows(named=True):
        case = cases.filter(pl.col("case_id") == row["case_id"]).row(0, named=True)
        h, w = case["image_height_px"], case["image_width_px"]
        mask = load_anatomy_masks(anatomy, case["image_id"], (h, w))[row["target"]]
        win = windows.filter((pl.col("case_id") == row["case_id"]) & (pl.col("target") == row["target"]))
        assert win.height == 1 and win["t_start_s"][0] == 0.0  # [0, end of the rightmost keyword sentence]
        fx = fixations.filter(pl.col("case_id") == row["case_id"])
        t0, t1 = fx["t_start_s"].to_numpy(), fx["t_end_s"].to_numpy()
        in_window = (t1 > 0.0) & (t0 <= win["t_end_s"][0])
        x, y = np.rint(fx["x_px"].to_numpy()), np.rint(fx["y_px"].to_numpy())
        on_image = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        inside = np.zeros(fx.height, bool)
        inside[on_image] = mask[y[on_image].astype(int), x[on_image].astype(int)]
        keep = in_window & inside
        assert row["n_fixations"] == int(keep.sum())
        dropped_total += int((in_window & ~inside).sum())
        # the exported map equals a render of the inside fixations alone, without any mask
        ref, _ = render_case(fx.filter(pl.Series(keep)), win, recipe, image_height_px=h, image_width_px=w)
        got = np.asarray(store[row["array"]][row["row"]], dtype=np.float32)
        np.testing.assert_allclose(got, ref[row["target"]].array, atol=1e-6)
    assert dropped_total > 0  # the filter did drop fixations, so the equality above is not vacuous
