"""Overlap metrics of binary masks (numpy, no torch)."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = 2 |P & T| / (|P| + |T|); 1.0 when both masks are empty."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU = |P & T| / |P | T|; 1.0 when both masks are empty."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    union = int(np.logical_or(p, t).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, t).sum()) / union


def per_structure_scores(
    pred_labels: np.ndarray, true_labels: np.ndarray, classes: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Dice and IoU per foreground class of two label maps of equal shape: ``{name: {dice, iou}}``."""
    if pred_labels.shape != true_labels.shape:
        raise ValueError(f"shape mismatch {pred_labels.shape} vs {true_labels.shape}")
    return {
        name: {"dice": dice(pred_labels == k, true_labels == k), "iou": iou(pred_labels == k, true_labels == k)}
        for k, name in enumerate(classes)
        if k > 0
    }
