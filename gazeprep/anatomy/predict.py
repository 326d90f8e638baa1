"""Batched SAMed inference over a release, into a resumable mask store (see :mod:`gazeprep.anatomy.store`)."""

from __future__ import annotations

import hashlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from gazeprep._atomic import atomic_write_parquet
from gazeprep.anatomy.data import ImageRecord, list_images
from gazeprep.anatomy.model import WEIGHTS_FILE, load_model
from gazeprep.anatomy.segment import load_record, segment_loaded
from gazeprep.anatomy.store import REJECTS_FILE, MaskStore
from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError
from gazeprep.schema import REJECTS


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def run_predict(
    model_dir: str | Path,
    dataset: str,
    root: str | Path,
    images_root: str | Path,
    out: str | Path,
    *,
    batch_size: int = 8,
    device: str = "auto",
    mask_size: int = 512,
    limit: int | None = None,
    workers: int = 2,
    progress: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict:
    """Segment every image of ``dataset`` under ``root`` (images from ``images_root``) into ``out``.

    Images already in ``out/masks.parquet`` are skipped (resume). Images that cannot be read are
    listed in ``out/rejects.parquet`` (stage ``anatomy``) and the rest goes on. Masks are stored on a
    ``mask_size`` x ``mask_size`` grid covering the whole image. ``workers`` threads decode the
    images of coming batches while the model runs. ``executor="ray"`` runs the batches on Ray actors
    instead (one per GPU when the cluster has GPUs), written in the same order into the same store.
    Returns counts and timing.
    """
    model_dir, out = Path(model_dir), Path(out)
    if mask_size <= 0:
        raise GazeprepError("--mask-size must be positive")
    model = load_model(model_dir)
    cfg = model.config
    dev = resolve_device(device if executor == "local" else "cpu")
    model.to(dev).eval()
    meta = {
        "dataset": dataset,
        "model_config": cfg.to_json(),
        "model_sha256": _sha256(model_dir / WEIGHTS_FILE),
        "classes": list(cfg.classes),
        "mask_grid": [mask_size, mask_size],
        "grid": "whole image stretched to the grid (no letterbox); resize back with nearest",
    }
    store = MaskStore(out, meta=meta)
    records: list[ImageRecord] = list_images(dataset, root)
    if limit is not None:
        records = records[:limit]
    done = store.done_images()
    todo = [r for r in records if r.image_id not in done]
    rejects: list[dict] = []
    n_done = 0
    t0 = time.time()
    bar = tqdm(total=len(todo), desc="anatomy predict", unit="img", disable=not progress)
    s = cfg.image_size

    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if executor == "ray":
        from gazeprep.anatomy.distributed import segment_on_ray

        batches = segment_on_ray(
            model_dir, chunks, images_root, dataset=dataset, mask_size=mask_size, device=device, address=ray_address
        )
    elif executor == "local":
        batches = _segment_local(model, dev, chunks, images_root, s, mask_size, dataset, workers)
    else:
        raise GazeprepError(f"unknown executor {executor!r}; use local or ray")
    for chunk, (meta_rows, labels, rej) in zip(chunks, batches):
        rejects.extend(rej)
        if labels is not None:
            store.append(dataset, meta_rows, labels, cfg.classes)
            n_done += len(meta_rows)
        bar.update(len(chunk))
    bar.close()
    elapsed = time.time() - t0
    rej_path = out / REJECTS_FILE
    frame = pl.DataFrame(rejects, schema=REJECTS) if rejects else pl.DataFrame(schema=REJECTS)
    atomic_write_parquet(frame, rej_path)
    return {
        "images": len(records),
        "skipped_done": len(records) - len(todo),
        "segmented": n_done,
        "rejected": len(rejects),
        "seconds": round(elapsed, 3),
        "images_per_s": round(n_done / elapsed, 3) if n_done and elapsed > 0 else None,
        "device": str(dev),
    }


def _segment_local(model, dev, chunks, images_root, size, mask_size, dataset, workers):
    """Yield :func:`segment_loaded` results per chunk; image decoding of the next batches
    overlaps with the forward pass (at most 2 batches in memory)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead: deque = deque()
        next_chunk = 0
        while ahead or next_chunk < len(chunks):
            while next_chunk < len(chunks) and len(ahead) < 2:
                ahead.append([pool.submit(load_record, rec, images_root, size) for rec in chunks[next_chunk]])
                next_chunk += 1
            loaded = [f.result() for f in ahead.popleft()]
            yield segment_loaded(model, dev, loaded, mask_size, dataset)
