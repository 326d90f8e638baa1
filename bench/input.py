"""Training-input throughput: ``GazeDataset`` against the papers' naive loader, same batches and workers.

The naive loader is what the papers' code does per sample (004 reads a JPG with PIL and one heatmap
array per label; MT-UNet / GG-CAM one ``.pt`` / ``.npy`` per sample): here one PIL image decode and
resize into the 512 x 512 letterbox and one ``np.load`` of a float32 ``.npy`` per exported map (zeros
for labels without a map), stacked into the same tensors ``GazeDataset`` returns (image 3 x 512 x 512,
maps 10 x 512 x 512). ``GazeDataset`` reads the export (Zarr, one read per case) with paper 004's
preset frame. Both run through a ``DataLoader`` with the same batch size and workers for the same
number of epochs (the image cache of ``GazeDataset`` fills during the first); the naive loader goes
through torch's ``default_collate`` (as the papers' code), ``GazeDataset`` through the loop's
collate. The ratio is items per second of ``GazeDataset`` over the naive loader's, measured in one
run.

Environment: ``BENCH_INPUT_CASES`` (300), ``BENCH_INPUT_BATCH`` (8), ``BENCH_INPUT_WORKERS`` (2),
``BENCH_INPUT_EPOCHS`` (3). Run alone with ``python -m bench.input``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
OUT = HERE / "_out"
SIZE = 512


def _gazeprep(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "gazeprep", *args], check=True, stdout=subprocess.DEVNULL)


def ensure_export(cases: int) -> tuple[Path, Path]:
    """(export, MIMIC root): a synthetic MIMIC-CXR root, a REFLACX release on its images and the
    ``reflacx-label-specific`` export at 512 (built once, kept under bench/_data)."""
    root = DATA / f"input-{cases}"
    mimic, release, export = root / "mimic", root / "reflacx", root / "export"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t0 = time.perf_counter()
        _gazeprep("synth", "--dataset", "mimic-cxr", "--out", str(mimic), "--cases", str(cases), "--seed", "3")
        _gazeprep("synth", "--dataset", "reflacx", "--out", str(release), "--cases", str(cases), "--seed", "3", "--images", str(mimic))
        _gazeprep("build-heatmaps", "--dataset", "reflacx", "--root", str(release), "--recipe", "reflacx-label-specific", "--out", str(export),
                  "--size", str(SIZE), "--images", str(mimic), "--quiet")
        print(f"built the {cases}-case input export in {time.perf_counter() - t0:.1f} s")
        (root / ".complete").write_text("ok")
    return export, mimic


class NaiveDataset:
    """One PIL decode + letterbox and one ``np.load`` per map per item (see the module docstring)."""

    def __init__(self, items: list[dict], targets: list[str], size: int):
        self.items, self.targets, self.size = items, targets, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        import torch
        from PIL import Image

        it = self.items[i]
        with Image.open(it["image"]) as im:
            im = im.convert("L")
            w, h = im.size
            s = self.size / max(h, w)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            canvas = Image.new("L", (self.size, self.size))
            canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((self.size - nw) // 2, (self.size - nh) // 2))
        image = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None].expand(3, -1, -1)
        maps = [torch.from_numpy(np.load(it["maps"][t])) if t in it["maps"] else torch.zeros(self.size, self.size) for t in self.targets]
        return {"image": image.contiguous(), "heatmaps": torch.stack(maps), "labels": torch.as_tensor(it["labels"]), "case_id": it["case_id"]}


def _naive_items(ex, ds, mimic: Path, folder: Path) -> list[dict]:
    """Write every map of the export as a float32 ``.npy`` (the naive layout) and list the items."""
    from gazeprep.datasets.images import resolve_image

    folder.mkdir(parents=True, exist_ok=True)
    have = {}
    for cid, tgt in ex.index.select("case_id", "target").iter_rows():
        p = folder / f"{cid}__{tgt}.npy"
        if not p.exists():
            np.save(p, ex.heatmap(cid, tgt).astype(np.float32))
        have.setdefault(cid, {})[tgt] = p
    items = []
    for i, cid in enumerate(ds.case_ids):
        row = ds.cases.row(i, named=True)
        direct = mimic / row["image_path"]
        img = direct if direct.is_file() else resolve_image(mimic, row["image_path"])
        jpg = Path(str(img)).with_suffix(".jpg")
        items.append({"case_id": cid, "image": jpg if jpg.is_file() else img, "maps": have.get(cid, {}), "labels": ds.label_matrix[i]})
    return items


def _throughput(dataset, batch: int, workers: int, epochs: int, collate) -> dict:
    import torch
    from torch.utils.data import DataLoader

    n = 0
    t0 = time.perf_counter()
    for e in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(e)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                            generator=torch.Generator().manual_seed(e), persistent_workers=False)
        for b in loader:
            n += len(b["case_id"])
    wall = time.perf_counter() - t0
    return {"items": n, "wall_s": wall, "items_per_s": n / wall}


def run(cases: int | None = None, batch: int | None = None, workers: int | None = None, epochs: int | None = None) -> dict:
    """Measure both loaders; returns the report (``input_throughput_ratio`` = GazeDataset / naive)."""
    import torch

    from gazeprep import load_export
    from gazeprep.train.data import GazeDataset, input_options
    from gazeprep.train.loop import _collate
    from gazeprep.train.models import resolve_config

    cases = int(cases or os.environ.get("BENCH_INPUT_CASES", "300"))
    batch = int(batch or os.environ.get("BENCH_INPUT_BATCH", "8"))
    workers = int(workers if workers is not None else os.environ.get("BENCH_INPUT_WORKERS", "2"))
    epochs = int(epochs or os.environ.get("BENCH_INPUT_EPOCHS", "3"))
    torch.set_num_threads(1)  # the loaders' own work, not intra-op threads, is measured
    export, mimic = ensure_export(cases)
    ex = load_export(export)
    data = resolve_config("lanfredi-mil")["data"]  # 004's frame: 512, XRayResizerPadRound32 geometry
    targets, labels = list(data["targets"]), list(data["labels"])
    ds = GazeDataset(ex, targets=targets, labels=labels, image_root=mimic, **input_options(data))
    items = _naive_items(ex, ds, mimic, OUT / f"naive-{cases}")
    naive = NaiveDataset(items, targets, SIZE)
    from torch.utils.data import default_collate

    fast = _throughput(ds, batch, workers, epochs, _collate)
    slow = _throughput(naive, batch, workers, epochs, default_collate)  # the papers' loaders use torch's default
    report = {"cases": len(ds), "batch": batch, "workers": workers, "epochs": epochs, "maps": ex.index.height,
              "gazedataset": fast, "naive_npy_pil": slow, "input_throughput_ratio": fast["items_per_s"] / slow["items_per_s"]}
    report["target_1.5x"] = report["input_throughput_ratio"] >= 1.5
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
