"""End to end: exports written by gazeprep.export (finalize / write_prediction_export), read back
with load_export, evaluated through the command line."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gazeprep.cli import main
from gazeprep.evaluate import evaluator as E
from gazeprep.evaluate import metrics as M
from gazeprep.export import CaseResult, finalize, load_export, write_prediction_export
from gazeprep.heatmaps.grid import OutputGrid
from gazeprep.recipes import Recipe

H, W, N = 40, 60, 32


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0  # image 40 x 60 letterboxed to 32 x 32


def _recipe() -> Recipe:
    return Recipe.model_validate(
        {
            "name": "t",
            "dataset": "reflacx",
            "window": {"kind": "sentence"},
            "render": {"sigma": {"value": 1.0, "unit": "deg"}},
            "output": {"size": N},
        }
    )


def _case(cid: str, split: str, box: tuple[float, float, float, float]) -> CaseResult:
    grid = OutputGrid.letterbox(H, W, N)
    x0, y0 = grid.to_grid(box[0], box[1])
    x1, y1 = grid.to_grid(box[2], box[3])
    r, c = np.mgrid[0:N, 0:N]
    cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 3, (y1 - y0) / 3
    heat = np.exp(-((c - cx) ** 2 / (2 * sx**2) + (r - cy) ** 2 / (2 * sy**2)))
    tables = {
        "cases": pl.DataFrame(
            {"dataset": ["reflacx"], "case_id": [cid], "split": [split], "image_height_px": [H], "image_width_px": [W]}
        ),
        "ellipses": pl.DataFrame(
            {
                "dataset": ["reflacx"],
                "case_id": [cid],
                "ellipse_idx": [0],
                "xmin_px": [box[0]],
                "ymin_px": [box[1]],
                "xmax_px": [box[2]],
                "ymax_px": [box[3]],
                "certainty": [5],
                "source_label": ["Pleural effusion"],
            }
        ),
        "fixations": pl.DataFrame(
            {
                "dataset": ["reflacx"],
                "case_id": [cid],
                "fixation_idx": [0],
                "t_start_s": [0.0],
                "t_end_s": [1.0],
                "x_px": [(box[0] + box[2]) / 2],
                "y_px": [(box[1] + box[3]) / 2],
            }
        ),
    }
    return CaseResult(cid, f"h-{cid}", tables, {"pleural_abnormality": heat.astype(np.float32)})


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("ex")
    boxes = {"v1": (10, 5, 30, 25), "v2": (25, 10, 50, 30), "t1": (5, 5, 25, 20), "t2": (30, 15, 55, 35)}
    splits = {"v1": "validate", "v2": "validate", "t1": "test", "t2": "test"}
    results = [_case(c, splits[c], b) for c, b in boxes.items()]
    gt = finalize(root / "gt", results, recipe=_recipe(), fsync=False)
    gt_ex = load_export(gt)
    # predictions: the gt maps shifted by one grid column (a slightly wrong model)
    preds = {(c, "pleural_abnormality"): np.roll(gt_ex.heatmap(c, "pleural_abnormality"), 1, axis=1) for c in boxes}
    pred = write_prediction_export(root / "pred", preds, model="shifted", source_export=gt, fsync=False)
    return gt, pred


def test_cli_map_metrics(exports, tmp_path, capsys):
    gt, pred = exports
    out = tmp_path / "summary.csv"
    code = run(
        [
            "evaluate",
            "--pred",
            str(pred),
            "--gt",
            str(gt),
            "--metrics",
            "cc,kld,ssim,iou,fgiou,nss",
            "--out",
            str(out),
            "--pairs-out",
            str(tmp_path / "pairs.parquet"),
            "--n-boot",
            "50",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "pleural_abnormality" in text and "cc↑" in text and "4 pairs" in text
    s = pl.read_csv(out)
    cc = s.filter((pl.col("group") == "all") & (pl.col("metric") == "cc"))["mean"][0]
    assert 0.6 < cc < 1.0  # shifted by one pixel: high but imperfect
    pairs = pl.read_parquet(tmp_path / "pairs.parquet")
    g, p = load_export(gt), load_export(pred)
    r = pairs.filter(pl.col("case_id") == "t1").row(0, named=True)
    assert r["cc"] == pytest.approx(
        M.cc(p.heatmap("t1", "pleural_abnormality"), g.heatmap("t1", "pleural_abnormality"))
    )
    assert np.isfinite(r["nss"]) and r["nss"] > 1  # the fixation sits at the blob's centre


def test_cli_gt_ellipses_vs_gt_maps(exports, tmp_path, capsys):
    gt, _ = exports
    out = tmp_path / "ell.parquet"
    assert (
        run(["evaluate", "--pred", str(gt), "--gt", str(gt), "--gt-ellipses", "--out", str(out), "--n-boot", "50"]) == 0
    )
    s = pl.read_parquet(out)
    lab = s.filter(pl.col("group") == "pleural_abnormality").row(0, named=True)
    # threshold chosen on the two validate cases, IoU reported on the two test cases
    assert lab["threshold_from"] == "validate" and lab["n"] == 2
    assert lab["threshold"] in M.THRESHOLDS_004
    # blobs drawn from the ellipses' boxes overlap them well at the validated threshold
    assert lab["mean"] > 0.5
    # independent recomputation for one test case
    ex = load_export(gt)
    grid = OutputGrid.letterbox(H, W, N)
    back = E.grid_to_image(ex.heatmap("t1", "pleural_abnormality"), grid)
    want = M.iou_at_threshold(back, M.ellipse_mask(H, W, [(5, 5, 25, 20)]), threshold=lab["threshold"])
    res = E.evaluate_exports(ex, ex, reference="ellipses", n_boot=20)
    got = res.pairs.filter(pl.col("case_id") == "t1")["iou"][0]
    assert got == pytest.approx(want)


def test_cli_bad_input_one_line(exports, tmp_path, capsys):
    gt, pred = exports
    assert run(["evaluate", "--pred", str(tmp_path / "missing"), "--gt", str(gt)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert run(["evaluate", "--pred", str(pred), "--gt", str(gt), "--metrics", "bogus"]) == 1
    assert "unknown metric 'bogus'" in capsys.readouterr().err


def test_cli_preview_png_and_html(exports, tmp_path, capsys):
    gt, _ = exports
    assert run(["preview", "--export", str(gt), "--case", "t1", "--out", str(tmp_path), "--size", "200"]) == 0
    png = tmp_path / "t1" / "pleural_abnormality.png"
    assert png.is_file()
    assert run(["preview", "--export", str(gt), "--html", "--out", str(tmp_path / "sheet"), "--size", "200"]) == 0
    assert (tmp_path / "sheet" / "index.html").read_text().count("<img") == 4
    assert run(["preview", "--export", str(gt), "--out", str(tmp_path)]) == 2  # usage error: no --case
    assert "--case" in capsys.readouterr().err


def test_cli_list_metrics(capsys):
    assert run(["evaluate", "--list-metrics"]) == 0
    out = capsys.readouterr().out
    for name in ("kld", "nss", "auc_judd", "ehr_auc", "interpretability", "fwiou"):
        assert name in out
    assert run(["evaluate", "--pred", "x"]) == 2  # usage error: missing --gt


def test_cli_organ_mode_errors_and_map_parsing(exports, tmp_path, capsys):
    from gazeprep.commands.evaluate import _parse_organ_map

    assert _parse_organ_map("a=heart, b=left_lung+right_lung") == {"a": ("heart",), "b": ("left_lung", "right_lung")}
    gt, pred = exports
    assert run(["evaluate", "--pred", str(pred), "--gt", str(gt), "--organ-masks", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert (
        run(["evaluate", "--pred", str(pred), "--gt", str(gt), "--organ-masks", str(tmp_path), "--organ-map", "x"]) == 2
    )
    assert "target=structure" in capsys.readouterr().err
    # masks folder without masks for these images: every pair NaN, reported, no crash
    code = run(
        [
            "evaluate",
            "--pred",
            str(pred),
            "--gt",
            str(gt),
            "--organ-masks",
            str(tmp_path),
            "--organ-map",
            "pleural_abnormality=left_lung",
            "--n-boot",
            "20",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "without an organ mask" in out


def _inject(export_dir, case_id: str, target: str, value: float) -> None:
    """Write ``value`` into one pixel of a stored map (through zarr, as a faulty writer would) and
    update the manifest's size and checksum of the rewritten chunk, so that only the value is wrong."""
    import hashlib
    import json

    import zarr

    ex = load_export(export_dir)
    row = ex.index.filter((pl.col("case_id") == case_id) & (pl.col("target") == target)).row(0, named=True)
    store = zarr.open_group(zarr.storage.LocalStore(export_dir / "heatmaps.zarr"), mode="r+")
    arr = store[row["array"]]
    m = np.asarray(arr[row["row"]])
    m[3, 4] = value
    arr[row["row"]] = m
    man_path = export_dir / "manifest.json"
    man = json.loads(man_path.read_text())
    for rel, info in man["files"].items():
        p = export_dir / rel
        if rel.startswith("heatmaps.zarr/") and p.is_file():
            info["bytes"] = p.stat().st_size
            info["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
    man_path.write_text(json.dumps(man))


@pytest.mark.parametrize(("side", "value"), [("prediction", float("nan")), ("ground truth", float("inf"))])
def test_cli_refuses_a_map_holding_nan_or_inf(exports, tmp_path, capsys, side, value):
    import shutil

    gt, pred = exports
    gt2, pred2 = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(gt, gt2)
    shutil.copytree(pred, pred2)
    bad = pred2 if side == "prediction" else gt2
    _inject(bad, "t2", "pleural_abnormality", value)
    assert not np.isfinite(load_export(bad).heatmap("t2", "pleural_abnormality")).all()
    capsys.readouterr()
    code = run(
        ["evaluate", "--pred", str(pred2), "--gt", str(gt2), "--metrics", "cc,ssim,l1,iou,fgiou", "--n-boot", "20"]
    )
    cap = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in cap.out + cap.err
    errors = [ln for ln in cap.err.splitlines() if ln.startswith("error:")]
    token = "NaN" if np.isnan(value) else "+inf"
    assert errors == [
        f"error: {side} export {bad}: case 't2', target 'pleural_abnormality': map holds 1 {token} value "
        f"(of {N * N} pixels); no metric is defined on non-finite values, fix or rebuild that map"
    ]
    assert "pairs;" not in cap.out  # no summary was printed
