"""Heart cut, overrides, mask store round trip, nearest resizing, image/mask readers (no torch)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gazeprep.anatomy.data import (
    labels_from_masks,
    load_release_masks,
    read_mask_png,
    resize_labels,
    resolve_image,
)
from gazeprep.anatomy.masks import (
    AnatomyMasks,
    MissingMaskError,
    heart_from_mediastinum,
    load_anatomy_masks,
    load_egd_anatomy_masks,
)
from gazeprep.anatomy.metrics import dice, iou, per_structure_scores
from gazeprep.anatomy.store import MASK_INDEX, MaskStore
from gazeprep.anatomy.structures import CLASSES
from gazeprep.errors import GazeprepError
from gazeprep.recipes import AnatomyFilter


def test_heart_cut_removes_top_third_of_vertical_extent():
    m = np.zeros((20, 10), bool)
    m[5:14, 2:8] = True  # rows 5..13: extent 9 -> rows 5, 6, 7 cut
    h = heart_from_mediastinum(m)
    assert h[8:14, 2:8].all() and not h[:8].any() and not h[14:].any()
    assert h.sum() == 6 * 6
    # fraction configurable: 0.5 of extent 9 -> keep rows r >= 5 + 4.5, i.e. 10..13
    h2 = heart_from_mediastinum(m, 0.5)
    assert np.flatnonzero(h2.any(1)).tolist() == [10, 11, 12, 13]
    assert heart_from_mediastinum(m, 0.0).sum() == m.sum()
    assert not heart_from_mediastinum(np.zeros((4, 4), bool)).any()
    with pytest.raises(GazeprepError):
        heart_from_mediastinum(m, 1.0)


def test_heart_cut_uses_extent_of_irregular_mask_and_keeps_columns():
    m = np.zeros((12, 12), bool)
    m[0, 5] = True  # a thin top spike: extent rows 0..11 = 12 -> cut rows 0..3
    m[6:12, 1:11] = True
    h = heart_from_mediastinum(m)
    assert not h[:4].any()
    assert (h[4:] == m[4:]).all()


def test_resize_labels_nearest_pixel_centres():
    a = np.arange(6).reshape(2, 3)
    assert resize_labels(a, (4, 6)).tolist() == [
        [0, 0, 1, 1, 2, 2],
        [0, 0, 1, 1, 2, 2],
        [3, 3, 4, 4, 5, 5],
        [3, 3, 4, 4, 5, 5],
    ]
    big = np.arange(16).reshape(4, 4)
    assert resize_labels(big, (2, 2)).tolist() == [[5, 7], [13, 15]]


def test_metrics_hand_computed():
    p = np.array([[1, 1, 0, 0]], bool)
    t = np.array([[0, 1, 1, 0]], bool)
    assert dice(p, t) == pytest.approx(0.5)
    assert iou(p, t) == pytest.approx(1 / 3)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    s = per_structure_scores(np.array([[1, 2, 0]]), np.array([[1, 1, 0]]), ("bg", "a", "b"))
    assert s["a"]["dice"] == pytest.approx(2 / 3) and s["b"]["dice"] == 0.0


def test_labels_from_masks_later_structure_wins():
    a = np.array([[1, 1, 0]], bool)
    b = np.array([[0, 1, 1]], bool)
    assert labels_from_masks({"x": a, "y": b}, ("bg", "x", "y")).tolist() == [[1, 2, 2]]


def _store_with(tmp_path, label_map, image_id="img-1", shape=(40, 30)):
    store = MaskStore(tmp_path / "anat", meta={"model": "t", "mask_grid": list(label_map.shape)})
    store.append("reflacx", [(image_id, *shape)], label_map[None], CLASSES)
    return store


def test_store_round_trip_and_resume_guard(tmp_path):
    grid = np.zeros((8, 8), np.uint8)
    grid[1:7, 1:3] = 2  # right lung (image left)
    grid[1:7, 5:7] = 1  # left lung
    grid[2:8, 3:5] = 3  # mediastinum
    store = _store_with(tmp_path, grid)
    assert store.done_images() == {"img-1"}
    assert dict(store.index.schema) == MASK_INDEX
    got = store.read("img-1")
    assert (got["left_lung"] == (grid == 1)).all() and (got["mediastinum"] == (grid == 3)).all()
    assert not got["aortic_knob"].any()
    # a second batch continues the rows
    store.append("reflacx", [("img-2", 8, 8)], grid[None], CLASSES)
    assert sorted(store.index["row"].to_list()) == list(range(8))
    reopened = MaskStore(tmp_path / "anat")
    assert reopened.done_images() == {"img-1", "img-2"}
    with pytest.raises(GazeprepError, match="different settings"):
        MaskStore(tmp_path / "anat", meta={"model": "other", "mask_grid": [8, 8]})
    with pytest.raises(GazeprepError, match="not an anatomy folder"):
        MaskStore(tmp_path / "nothing")


def test_load_anatomy_masks_resizes_and_derives_heart(tmp_path):
    grid = np.zeros((8, 8), np.uint8)
    grid[2:8, 3:5] = 3  # mediastinum rows 2..7 (extent 6) -> heart rows 4..7
    grid[1:7, 5:7] = 1
    grid[1:7, 1:3] = 2
    _store_with(tmp_path, grid)
    m = load_anatomy_masks(tmp_path / "anat", "img-1", (16, 24))
    assert set(m) == {"heart", "left_lung", "right_lung"}
    assert all(v.shape == (16, 24) and v.dtype == bool for v in m.values())
    # grid rows 4..7 -> image rows 8..15; grid cols 3..4 -> image cols 9..14
    expect = np.zeros((16, 24), bool)
    expect[8:16, 9:15] = True
    assert (m["heart"] == expect).all()
    m2 = load_anatomy_masks(tmp_path / "anat", "img-1", (8, 8), heart_cut_top=0.5, structures=("heart",))
    assert np.flatnonzero(m2["heart"].any(1)).tolist() == [5, 6, 7]
    with pytest.raises(MissingMaskError):
        load_anatomy_masks(tmp_path / "anat", "unknown-image", (8, 8))


def test_overrides_take_precedence(tmp_path):
    grid = np.zeros((8, 8), np.uint8)
    grid[2:8, 3:5] = 3
    grid[1:7, 5:7] = 1
    grid[1:7, 1:3] = 2
    _store_with(tmp_path, grid)
    ov = tmp_path / "anat" / "overrides" / "img-1"
    ov.mkdir(parents=True)
    left = np.zeros((4, 4), np.uint8)
    left[0, 0] = 255  # override at another size: resized nearest
    Image.fromarray(left).save(ov / "left_lung.png")
    med = np.zeros((8, 8), np.uint8)
    med[0:4, 0:8] = 255  # corrected mediastinum rows 0..3 -> heart rows 2..3 (cut ceil(4/3)... r >= 4/3)
    Image.fromarray(med).save(ov / "mediastinum.png")
    m = load_anatomy_masks(tmp_path / "anat", "img-1", (8, 8))
    assert m["left_lung"].sum() == 4 and m["left_lung"][:2, :2].all()
    assert np.flatnonzero(m["heart"].any(1)).tolist() == [2, 3]
    assert (m["right_lung"] == (grid == 2)).all()  # not overridden: prediction
    heart = np.zeros((8, 8), np.uint8)
    heart[7, 7] = 255
    Image.fromarray(heart).save(ov / "heart.png")
    m = load_anatomy_masks(tmp_path / "anat", "img-1", (8, 8))
    assert m["heart"].sum() == 1 and m["heart"][7, 7]
    # an image with only overrides (no prediction) works for the overridden structures
    only = tmp_path / "anat" / "overrides" / "img-9"
    only.mkdir()
    Image.fromarray(heart).save(only / "heart.png")
    assert load_anatomy_masks(tmp_path / "anat", "img-9", (8, 8), structures=("heart",))["heart"].sum() == 1
    # explicit overrides folder replaces the default one
    other = tmp_path / "elsewhere"
    assert (
        load_anatomy_masks(tmp_path / "anat", "img-1", (8, 8), overrides_dir=other)["left_lung"].sum()
        == (grid == 1).sum()
    )


def test_anatomy_masks_from_recipe_filter(tmp_path):
    grid = np.zeros((8, 8), np.uint8)
    grid[2:8, 3:5] = 3
    grid[1:7, 5:7] = 1
    grid[1:7, 1:3] = 2
    _store_with(tmp_path, grid)
    f = AnatomyFilter(masks="samed", heart_from_mediastinum_cut_top=0.5)
    am = AnatomyMasks(f, default_dir=tmp_path / "anat")
    by_target = am.for_image("img-1", (8, 8))
    assert set(by_target) == {"heart", "left_lung", "right_lung"}
    assert np.flatnonzero(by_target["heart"].any(1)).tolist() == [5, 6, 7]
    with pytest.raises(GazeprepError):
        AnatomyMasks(f)


def test_egd_masks_either_spelling_and_png_encodings(tmp_path):
    folder = tmp_path / "egd" / "audio_segmentation_transcripts" / "d1"
    folder.mkdir(parents=True)
    m = np.zeros((6, 6), np.uint8)
    m[1:5, 1:5] = 255
    Image.fromarray(m).save(folder / "mediastinum.png")  # documented spelling
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[0, 0, 2] = 1
    Image.fromarray(rgb).save(folder / "left_lung.png")
    got = load_release_masks("egd-cxr", tmp_path / "egd", "d1")
    assert set(got) == {"mediastinum", "left_lung"}
    assert got["left_lung"].sum() == 1 and read_mask_png(folder / "left_lung.png")[0, 0]
    h = load_egd_anatomy_masks(tmp_path / "egd", "d1", (6, 6), structures=("heart",))["heart"]
    assert np.flatnonzero(h.any(1)).tolist() == [3, 4]  # extent rows 1..4 -> keep r >= 1 + 4/3
    (folder / "mediastanum.png").write_bytes((folder / "mediastinum.png").read_bytes())
    assert "mediastinum" in load_release_masks("egd-cxr", tmp_path / "egd", "d1")
    with pytest.raises(GazeprepError):
        load_release_masks("egd-cxr", tmp_path / "egd", "../escape")
    with pytest.raises(GazeprepError, match="'reflacx' ships no anatomy masks"):
        load_release_masks("reflacx", tmp_path / "egd", "d1")


def test_resolve_image_prefixes_and_extension_fallback(tmp_path):
    rel = "files/p10/p10000001/s5/abc.jpg"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes(b"x")
    assert (
        resolve_image(tmp_path, "physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000001/s5/abc.dcm") == tmp_path / rel
    )
    assert resolve_image(tmp_path, "files/p10/p10000001/s5/abc.dcm") == tmp_path / rel
    with pytest.raises(GazeprepError, match="not found"):
        resolve_image(tmp_path, "files/p10/p10000001/s5/zzz.dcm")
    with pytest.raises(GazeprepError):
        resolve_image(tmp_path, "../../etc/passwd")


def test_export_mask_pngs_round_trips_through_overrides(tmp_path):
    from gazeprep.anatomy.masks import export_mask_pngs

    grid = np.zeros((8, 8), np.uint8)
    grid[2:8, 3:5] = 3
    grid[1:7, 5:7] = 1
    grid[1:7, 1:3] = 2
    _store_with(tmp_path, grid, shape=(40, 30))
    n = export_mask_pngs(tmp_path / "anat", tmp_path / "png", structures=("heart", "left_lung", "right_lung"))
    assert n == 3
    direct = load_anatomy_masks(tmp_path / "anat", "img-1", (40, 30))
    png = read_mask_png(tmp_path / "png" / "img-1" / "heart.png")
    assert png.shape == (40, 30) and (png == direct["heart"]).all()
    # the exported files are valid overrides: using them as the overrides folder changes nothing
    again = load_anatomy_masks(tmp_path / "anat", "img-1", (40, 30), overrides_dir=tmp_path / "png")
    assert all((again[k] == direct[k]).all() for k in direct)


def test_masks_table_lists_predictions_and_overrides(tmp_path):
    import polars as pl

    from gazeprep.anatomy.masks import masks_table, release_masks_table
    from gazeprep.schema import validate

    grid = np.zeros((8, 8), np.uint8)
    grid[1:7, 5:7] = 1
    _store_with(tmp_path, grid)
    ov = tmp_path / "anat" / "overrides" / "img-1"
    ov.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(ov / "heart.png")
    t = masks_table(tmp_path / "anat")
    validate(t, "masks")
    assert t.height == 5
    assert t.filter(pl.col("source") == "override")["structure"].to_list() == ["heart"]
    row = t.filter(pl.col("structure") == "left_lung").row(0, named=True)
    assert row["source"] == "samed" and row["path"].endswith("masks.zarr/masks_8x8#0")
    folder = tmp_path / "egd" / "audio_segmentation_transcripts" / "d1"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "mediastanum.png")
    e = release_masks_table("egd-cxr", tmp_path / "egd", ["d1"])
    validate(e, "masks")
    # path relative to the release root, as in the adapter's per-case masks table
    assert e.rows() == [
        ("egd-cxr", "d1", "mediastinum", "egd_png", "audio_segmentation_transcripts/d1/mediastanum.png")
    ]
