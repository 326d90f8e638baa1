"""Dataset: letterbox geometry, paired augmentation, labels, subject-disjoint splits, determinism."""

import numpy as np
import polars as pl
import pytest
import torch

from gazeprep.train.data import GazeDataset, MemoryExport, letterbox, letterbox_params, subject_split
from gazeprep.train.synthetic import CLASSES, make_synthetic_export


def _bright_pixel_export(h=30, w=20, y=7, x=4):
    img = np.zeros((h, w), np.float32)
    img[y, x] = 1.0
    heat = img.copy()
    mask = img > 0
    cases = pl.DataFrame({"case_id": ["a"], "subject_id": [1], "discarded": [False]})
    hm = pl.DataFrame({"case_id": ["a"], "target": ["full"]})
    return MemoryExport({"cases": cases, "heatmaps": hm}, {("a", "full"): heat}, {"a": img}, {("a", "lung"): mask})


def test_letterbox_centres_and_keeps_aspect():
    nh, nw, top, left = letterbox_params(30, 20, 60)
    assert (nh, nw, top, left) == (60, 40, 0, 10)
    t = torch.ones(1, 30, 20)
    out = letterbox(t, 60)
    assert out.shape == (1, 60, 60)
    assert float(out[0, :, :10].abs().max()) == 0 and float(out[0, :, 50:].abs().max()) == 0
    assert float(out[0, :, 10:50].min()) == pytest.approx(1.0, abs=1e-5)


def test_augmentation_moves_image_heatmap_and_mask_together():
    ex = _bright_pixel_export()
    ds = GazeDataset(
        ex,
        targets=["full"],
        labels=[],
        size=40,
        augment={"rotation_deg": 45, "translation": 0.15, "scale": 0.15, "hflip": True},
        mask_structures=["lung"],
        seed=3,
    )
    plain = GazeDataset(ex, targets=["full"], labels=[], size=40, augment=None, mask_structures=["lung"])[0]
    moved = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        img, heat, mask = s["image"][0], s["heatmaps"][0], s["masks"][0]
        pi = np.unravel_index(int(torch.argmax(img)), img.shape)
        ph = np.unravel_index(int(torch.argmax(heat)), heat.shape)
        assert pi == ph  # same warp for both
        assert torch.allclose(img, heat, atol=1e-6)
        if mask.sum() > 0:  # nearest-sampled mask lands next to the bilinear peak
            pm = np.argwhere(mask.numpy() > 0.5).mean(0)
            assert np.abs(pm - np.array(pi)).max() <= 1.5
        if pi != np.unravel_index(int(torch.argmax(plain["image"][0])), (40, 40)):
            moved += 1
    assert moved >= 4  # the augmentation really moves things
    # one draw per (seed, epoch, index): the same epoch gives the same sample
    ds.set_epoch(2)
    assert torch.equal(ds[0]["image"], ds[0]["image"])


def test_labels_targets_and_validity_from_tables():
    ex = make_synthetic_export(6, unannotated=2)
    ds = GazeDataset(ex, targets=list(CLASSES), labels=list(CLASSES), size=32)
    for i in range(6):
        s = ds[i]
        cls = i % 3
        assert s["class_index"].item() == cls
        assert s["labels"].tolist() == [float(j == cls) for j in range(3)]
        if i < 4:
            assert s["heatmap_valid"].tolist() == [j == cls for j in range(3)]
            assert bool(s["annotated"])
            assert float(s["heatmaps"][cls].max()) > 0.9
        else:
            assert not bool(s["annotated"]) and float(s["heatmaps"].abs().max()) == 0
        assert s["image"].shape == (3, 32, 32)


def test_subject_split_is_disjoint_and_deterministic():
    n = 40
    cases = pl.DataFrame({"case_id": [f"c{i}" for i in range(n)], "subject_id": [i // 3 for i in range(n)]})
    a = subject_split(cases, seed=1)
    b = subject_split(cases, seed=1)
    assert a == b
    assert sum(len(v) for v in a.values()) == n
    subj = dict(zip(cases["case_id"], cases["subject_id"]))
    sets = {k: {subj[c] for c in v} for k, v in a.items()}
    assert (
        not (sets["train"] & sets["validate"])
        and not (sets["train"] & sets["test"])
        and not (sets["validate"] & sets["test"])
    )
    assert all(len(v) > 0 for v in a.values())
    assert subject_split(cases, seed=2) != a
