"""The input pipeline: the training frames (pad_crop_stride, cover, stretch, non-square letterbox)
against hand-computed pixel positions, maps taken from the frame their recipe rendered them in, one
Zarr read per case, one buffer per item, the image cache, CLAHE and photometric augmentation."""

import numpy as np
import polars as pl
import pytest
import torch

from gazeprep.heatmaps.grid import OutputGrid
from gazeprep.train.data import AugmentConfig, GazeDataset, MemoryExport, clahe, random_affine
from gazeprep.train.frames import TrainFrame, grid_from_spec, map_to_grid, transfer


def _ramp(h, w):
    return torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)


def test_pad_crop_stride_samples_the_codes_pixels():
    # 7 x 5 image into a 4 x 3 frame with stride 2: canvas 8 x 6, padding int(1/2) = 0 before
    img = _ramp(7, 5)
    out = transfer(img, OutputGrid.native(7, 5), TrainFrame.make([4, 3], "pad_crop_stride", stride=2).grid(7, 5))
    want = torch.zeros(1, 4, 3)
    for r in range(4):
        for c in range(3):
            y, x = 2 * r, 2 * c
            if y < 7 and x < 5:
                want[0, r, c] = img[0, y, x]
    assert torch.equal(out, want)
    # a larger image is cropped centred: canvas 6 x 6 from 10 x 9 -> int(-4/2) = -2 rows, int(-3/2) = -1 column
    img = _ramp(10, 9)
    out = transfer(img, OutputGrid.native(10, 9), TrainFrame.make([3, 3], "pad_crop_stride", stride=2).grid(10, 9))
    want = torch.stack([torch.stack([img[0, 2 * r + 2, 2 * c + 1] for c in range(3)]) for r in range(3)])[None]
    assert torch.equal(out, want)


def test_cover_and_stretch_geometry():
    # cover: 30 x 20 into 10 x 10: scale max(1/3, 1/2) = 1/2 -> 15 x 10, 3 rows cropped above ((10 - 15) // 2 = -3)
    img = torch.zeros(1, 30, 20)
    img[0, 4:10, :] = (
        1.0  # rows 4-9 -> resized rows 2-4; resized row 3 (source rows 5-8 with the antialias kernel) -> frame row 0
    )
    out = transfer(img, OutputGrid.native(30, 20), TrainFrame.make(10, "cover").grid(30, 20))
    assert out.shape == (1, 10, 10)
    assert int(out[0, :, 5].argmax()) == 0 and float(out[0, 0, 5]) == pytest.approx(1.0)
    # stretch: every axis resized on its own (003's Resize((224, 224)))
    g = TrainFrame.make([8, 4], "stretch").grid(16, 16)
    assert (g.scale_y, g.scale_x) == (0.5, 0.25)


def test_non_square_letterbox_and_prediction_round_trip():
    frame = TrainFrame.make([20, 40], "letterbox")
    g = frame.grid(30, 20)  # 30 x 20 image into 20 x 40: scale 2/3 -> 20 x 13, placed at column (40 - 13) // 2 = 13
    assert (g.height, g.width) == (20, 40)
    img = torch.zeros(1, 30, 20)
    img[0, 15, 10] = 1.0
    out = transfer(img, OutputGrid.native(30, 20), g)
    r, c = np.unravel_index(int(out[0].argmax()), (20, 40))
    assert r == 10 and 13 <= c <= 13 + 13
    back = map_to_grid(out[0].numpy(), g, OutputGrid.native(30, 20))
    assert np.unravel_index(int(np.argmax(back)), back.shape) == (15, 10)


def _export(images, maps, spec=None, rows=None):
    cases = pl.DataFrame(
        {
            "case_id": list(images),
            "subject_id": list(range(len(images))),
            "discarded": [False] * len(images),
            "image_height_px": [v.shape[0] for v in images.values()],
            "image_width_px": [v.shape[1] for v in images.values()],
        }
    )
    hm = pl.DataFrame({"case_id": [k[0] for k in maps], "target": [k[1] for k in maps]})
    man = {"recipe": {"name": "t", "output": spec}} if spec else {}
    return MemoryExport({"cases": cases, "heatmaps": hm}, maps, images, manifest=man)


def test_maps_rendered_in_the_training_frame_are_copied_unchanged():
    rng = np.random.default_rng(0)
    img = rng.random((70, 50)).astype(np.float32)
    spec = {"size": [8, 6], "fit": "pad_crop_stride", "stride": 10, "letterbox_rule": "centre"}
    m = rng.random((8, 6)).astype(np.float32)  # MT-UNet-style map: canvas 80 x 60, every 10th pixel
    ex = _export({"a": img}, {("a", "full"): m}, spec)
    ds = GazeDataset(ex, targets=["full"], labels=[], size=[8, 6], fit="pad_crop_stride", stride=10)
    assert torch.equal(ds[0]["heatmaps"][0], torch.from_numpy(m))
    # the image went through the same sampling: canvas pad int(10/2) = 5 rows, int(10/2) = 5 columns
    want = np.zeros((8, 6), np.float32)
    for r in range(8):
        for c in range(6):
            y, x = 10 * r - 5, 10 * c - 5
            if 0 <= y < 70 and 0 <= x < 50:
                want[r, c] = img[y, x]
    assert np.array_equal(ds[0]["image"][0].numpy(), want)
    # the same map read by a model trained at another frame is moved, not copied
    other = GazeDataset(ex, targets=["full"], labels=[], size=16)
    assert other[0]["heatmaps"].shape == (1, 16, 16)
    assert grid_from_spec(spec, 70, 50, 8, 6) == OutputGrid.pad_crop_stride(70, 50, 8, 6, 10)


class _CountingArray:
    def __init__(self, data):
        self.data = data
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]

    def get_orthogonal_selection(self, sel):
        self.reads += 1
        return self.data[sel[0]]


class _ZarrLikeExport(MemoryExport):
    """A MemoryExport whose maps live in one (N, H, W) array, read through ``array(name)``."""

    def array(self, name):
        return self.arrays[name]


def test_all_maps_of_a_case_in_one_array_read():
    rng = np.random.default_rng(1)
    img = rng.random((16, 16)).astype(np.float32)
    stack = rng.random((5, 16, 16)).astype(np.float16)
    # case a: rows 0-2 (contiguous), case b: rows 3 and 4 of targets t2, t0
    idx = pl.DataFrame(
        {
            "case_id": ["a", "a", "a", "b", "b"],
            "target": ["t0", "t1", "t2", "t2", "t0"],
            "array": ["h16_w16"] * 5,
            "row": [0, 1, 2, 3, 4],
        }
    )
    cases = pl.DataFrame({"case_id": ["a", "b"], "subject_id": [1, 2], "discarded": [False, False]})
    ex = _ZarrLikeExport({"cases": cases, "heatmaps": idx}, {}, {"a": img, "b": img})
    ex.arrays = {"h16_w16": _CountingArray(stack)}
    ds = GazeDataset(ex, targets=["t0", "t1", "t2"], labels=[], size=16)
    a = ds[0]
    assert ex.arrays["h16_w16"].reads == 1
    assert torch.equal(a["heatmaps"], torch.from_numpy(stack[0:3].astype(np.float32)))
    b = ds[1]
    assert ex.arrays["h16_w16"].reads == 2
    assert torch.equal(b["heatmaps"][0], torch.from_numpy(stack[4].astype(np.float32)))
    assert torch.equal(b["heatmaps"][2], torch.from_numpy(stack[3].astype(np.float32)))
    assert float(b["heatmaps"][1].abs().max()) == 0 and b["heatmap_valid"].tolist() == [True, False, True]
    # scattered rows: one orthogonal selection
    idx2 = idx.with_columns(pl.Series("row", [0, 2, 4, 1, 3]))
    ex2 = _ZarrLikeExport({"cases": cases, "heatmaps": idx2}, {}, {"a": img, "b": img})
    ex2.arrays = {"h16_w16": _CountingArray(stack)}
    a2 = GazeDataset(ex2, targets=["t0", "t1", "t2"], labels=[], size=16)[0]
    assert ex2.arrays["h16_w16"].reads == 1
    assert torch.equal(a2["heatmaps"][1], torch.from_numpy(stack[2].astype(np.float32)))


def test_one_buffer_per_item_and_the_image_cache():
    calls = []
    rng = np.random.default_rng(2)
    img = rng.random((30, 20)).astype(np.float32)

    class _Ex(MemoryExport):
        def image(self, cid):
            calls.append(cid)
            return super().image(cid)

    base = _export({"a": img}, {("a", "full"): img})
    ex = _Ex(base.tables, base.heatmaps, base.images)
    ds = GazeDataset(ex, targets=["full"], labels=[], size=24)
    first, second = ds[0], ds[0]
    assert calls == ["a"]  # the second read came from the cache
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["heatmaps"], second["heatmaps"])
    # image (an expanded view, no copy per channel), maps and masks share one tensor's storage
    assert first["image"].stride(0) == 0
    assert first["image"].untyped_storage().data_ptr() == first["heatmaps"].untyped_storage().data_ptr()
    # the same image through the map path gives the same values (one transfer function for both)
    assert torch.allclose(first["image"][0], first["heatmaps"][0], atol=1e-6)
    nocache = GazeDataset(ex, targets=["full"], labels=[], size=24, cache_images=False)
    nocache[0], nocache[0]
    assert calls == ["a", "a", "a"]


def test_clahe_applies_scikit_images_equalisation_at_the_training_size():
    from skimage.exposure import equalize_adapthist

    rng = np.random.default_rng(3)
    img = (0.3 + 0.1 * rng.random((40, 40))).astype(np.float32)
    ex = _export({"a": img}, {})
    ds = GazeDataset(ex, targets=["full"], labels=[], size=40, clahe=True)
    want = equalize_adapthist(img, clip_limit=0.01).astype(np.float32)
    assert np.allclose(ds[0]["image"][0].numpy(), want, atol=1e-6)
    assert np.allclose(clahe(img), want)
    assert float(ds[0]["image"][0].std()) > 2 * float(img.std())  # contrast really spread


def test_affine_rotates_in_pixel_space_on_non_square_frames():
    cfg = AugmentConfig(rotation_deg=40, translation=0.0, scale=0.0)
    aspect = 0.5  # H / W
    for seed in range(5):
        theta = random_affine(torch.Generator().manual_seed(seed), cfg, aspect=aspect)
        d = torch.diag(torch.tensor([1.0, aspect]))  # pixel scale of normalised x, y (W/2 = 1, H/2 = aspect)
        a_pix = d @ theta[:, :2] @ torch.linalg.inv(d)
        assert torch.allclose(a_pix @ a_pix.T, torch.eye(2), atol=1e-5)  # a rotation in pixels, not a shear


def test_photometric_augmentation_is_seeded_and_stays_in_range():
    rng = np.random.default_rng(4)
    img = rng.random((20, 20)).astype(np.float32)
    ex = _export({"a": img}, {})
    aug = {"rotation_deg": 0, "translation": 0, "scale": 0, "brightness": 0.2, "contrast": 0.3, "noise_std": 0.05}
    ds = GazeDataset(ex, targets=["full"], labels=[], size=20, augment=aug, seed=1)
    x1, x2 = ds[0]["image"][0].clone(), ds[0]["image"][0].clone()
    assert torch.equal(x1, x2)  # a pure function of (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"][0], x1)
    assert float(x1.min()) >= 0 and float(x1.max()) <= 1
    assert not torch.allclose(x1, torch.from_numpy(img), atol=1e-3)


def test_worker_batches_are_the_items_without_a_stacking_copy():
    from torch.utils.data import DataLoader

    from gazeprep.train.loop import _collate
    from gazeprep.train.synthetic import CLASSES, make_synthetic_export

    ds = GazeDataset(make_synthetic_export(6, unannotated=2), targets=list(CLASSES), labels=list(CLASSES), size=24)
    want = [ds[i] for i in range(6)]
    for workers in (0, 1):  # a worker builds the batch in shared memory: absent maps must still read as 0
        batches = list(DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=_collate))
        assert len(batches) == 2
        for b, batch in enumerate(batches):
            for k in range(3):
                w = want[3 * b + k]
                for key in ("image", "heatmaps", "masks", "labels", "heatmap_valid", "class_index"):
                    assert torch.equal(batch[key][k], w[key]), (workers, key)
                assert batch["case_id"][k] == w["case_id"]
            assert batch["image"].shape == (3, 3, 24, 24) and batch["heatmaps"].shape == (3, 3, 24, 24)
