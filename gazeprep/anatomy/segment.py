"""One batch of SAMed inference: decode the images, segment them, list the unreadable ones.

The local loop (:func:`gazeprep.anatomy.predict.run_predict`) and the Ray actors
(:mod:`gazeprep.anatomy.distributed`) both call these functions, so their outputs are identical; the
two modules import this one and not each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gazeprep.anatomy.data import ImageRecord, load_gray, resize_float, resolve_image
from gazeprep.anatomy.train import logits_to_labels, predict_logits
from gazeprep.errors import GazeprepError
from gazeprep.schema import reject

__all__ = ["load_record", "segment_loaded"]


def load_record(rec: ImageRecord, images_root: str | Path, size: int):
    """(record, model-size image, original shape) or (record, None, error message)."""
    try:
        g = load_gray(resolve_image(images_root, rec.image_path))
    except GazeprepError as exc:
        return rec, None, str(exc)
    return rec, resize_float(g, size), (int(g.shape[0]), int(g.shape[1]))


def segment_loaded(model, dev, loaded: list, mask_size: int, dataset: str):
    """Run the model on one batch of :func:`load_record` results.

    Returns ``(meta_rows, labels, rejects)``: ``meta_rows`` = (image_id, H, W) per segmented image,
    ``labels`` = uint8 class maps (B, mask_size, mask_size) or None, ``rejects`` rows for unreadable
    images. The local loop and the Ray actors both call this, so their outputs are identical.
    """
    imgs, meta_rows, rejects = [], [], []
    for rec, img, info in loaded:
        if img is None:
            rejects.append(reject(dataset, rec.image_id, "anatomy", rec.source_file, rec.source_row, info))
            continue
        imgs.append(img)
        meta_rows.append((rec.image_id, *info))
    labels = None
    if imgs:
        with torch.no_grad():
            logits = predict_logits(model, np.stack(imgs), dev)
        labels = logits_to_labels(logits, (mask_size, mask_size))
    return meta_rows, labels, rejects
