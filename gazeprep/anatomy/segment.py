"""One batch of SAMed inference: decode the images, segment them, list the unreadable ones.

:func:`gazeprep.anatomy.predict.predict_block` (the executor's per-block function, in the driver, a
pool process or a Ray task) calls these functions, so every executor computes the same masks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gazeprep.anatomy.data import ImageRecord, load_gray, resize_float, resolve_image
from gazeprep.anatomy.model import Samed
from gazeprep.anatomy.train import logits_to_labels, predict_logits
from gazeprep.errors import GazeprepError
from gazeprep.schema import reject

__all__ = ["LoadedImage", "SegmentedBatch", "load_record", "segment_batches", "segment_loaded"]


@dataclass(frozen=True)
class LoadedImage:
    """One decoded image: ``image`` float32 (S, S) at the model size and ``shape`` (H, W) of the
    original, or ``image`` None and ``error`` saying why it could not be read."""

    record: ImageRecord
    image: np.ndarray | None
    shape: tuple[int, int] | None = None
    error: str | None = None


@dataclass
class SegmentedBatch:
    """What :func:`segment_loaded` returns: ``images`` (image_id, H, W) per segmented image,
    ``labels`` uint8 class maps (B, mask_size, mask_size) in the same order (None when no image
    of the batch could be read), ``rejects`` rows (stage ``anatomy``) of the unreadable ones."""

    images: list[tuple[str, int, int]]
    labels: np.ndarray | None
    rejects: list[dict]


def load_record(rec: ImageRecord, images_root: str | Path, size: int) -> LoadedImage:
    """Decode the image of ``rec`` under ``images_root`` and resize it to ``size`` x ``size``; an
    image that cannot be found or decoded comes back with its error (a reject, not an exception)."""
    try:
        g = load_gray(resolve_image(images_root, rec.image_path))
    except GazeprepError as exc:
        return LoadedImage(rec, None, error=str(exc))
    return LoadedImage(rec, resize_float(g, size), (int(g.shape[0]), int(g.shape[1])))


def segment_loaded(
    model: Samed, dev: torch.device, loaded: list[LoadedImage], mask_size: int, dataset: str
) -> SegmentedBatch:
    """Run the model on one batch of :func:`load_record` results (one forward pass)."""
    imgs: list[np.ndarray] = []
    images: list[tuple[str, int, int]] = []
    rejects: list[dict] = []
    for item in loaded:
        rec = item.record
        if item.image is None or item.shape is None:
            rejects.append(reject(dataset, rec.image_id, "anatomy", rec.source_file, rec.source_row, item.error or ""))
            continue
        imgs.append(item.image)
        images.append((rec.image_id, *item.shape))
    labels = None
    if imgs:
        with torch.no_grad():
            logits = predict_logits(model, np.stack(imgs), dev)
        labels = logits_to_labels(logits, (mask_size, mask_size))
    return SegmentedBatch(images, labels, rejects)


def segment_batches(
    model: Samed,
    dev: torch.device,
    batches: list[list[ImageRecord]],
    images_root: str | Path,
    *,
    mask_size: int,
    dataset: str,
    decode_threads: int,
) -> Iterator[SegmentedBatch]:
    """:func:`segment_loaded` of each batch in order; ``decode_threads`` threads decode the images
    of the coming batches while the model runs (at most 2 batches in memory)."""
    size = model.config.image_size
    with ThreadPoolExecutor(max_workers=max(1, decode_threads)) as pool:
        ahead: deque[list[Future[LoadedImage]]] = deque()
        nxt = 0
        while ahead or nxt < len(batches):
            while nxt < len(batches) and len(ahead) < 2:
                ahead.append([pool.submit(load_record, rec, images_root, size) for rec in batches[nxt]])
                nxt += 1
            loaded = [f.result() for f in ahead.popleft()]
            yield segment_loaded(model, dev, loaded, mask_size, dataset)
