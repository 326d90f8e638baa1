"""Per-epoch heatmap metrics for the training loop.

CC and KLD are the evaluation area's functions (:func:`gazeprep.evaluate.metrics.cc` and
:func:`~gazeprep.evaluate.metrics.kld`, MIT conventions), so training logs and ``gazeprep evaluate``
give the same numbers: there is one implementation of each metric. IoU here is 004's training-time
form (``pred > t`` against ``target > t``, both thresholded).

Maps holding NaN or +-inf are refused with one :class:`~gazeprep.errors.GazeprepError` line naming
which map (prediction or target), its index in the batch and, when the caller gives ``labels``, the
case and target it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import metrics as EM


def iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """IoU of ``pred > threshold`` and ``target > threshold`` per map, (N, h, w) x 2 -> (N,);
    0 when both are empty."""
    a = pred.flatten(1) > threshold
    b = target.flatten(1) > threshold
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def require_finite_maps(maps: torch.Tensor, what: str, labels: Sequence[str] | None = None) -> None:
    """Raise one :class:`GazeprepError` line when any of the (N, h, w) ``maps`` holds NaN or +-inf.

    One ``torch.isfinite(...).all()`` over the batch; only on failure is the first bad map located.
    ``what`` names the side (``"prediction"`` / ``"target"``); ``labels[i]`` (e.g. ``"case 'c1',
    target 'edema'"``) names map ``i`` when given."""
    if maps.numel() == 0 or bool(torch.isfinite(maps).all()):
        return
    flat = maps.detach().flatten(1)
    bad = (~torch.isfinite(flat)).any(1).nonzero().flatten().tolist()
    i = int(bad[0])
    row = flat[i].double().cpu().numpy()
    counts = EM.non_finite_counts(row) or (0, 0, 0)
    who = labels[i] if labels is not None and i < len(labels) else f"map {i + 1} of {maps.shape[0]}"
    more = f" ({len(bad) - 1} other map{'s' if len(bad) > 2 else ''} too)" if len(bad) > 1 else ""
    raise GazeprepError(
        f"{what} {who}: {EM.describe_non_finite(*counts, row.size)}{more}; no metric is defined on non-finite values"
    )


def map_metrics(pred: torch.Tensor, target: torch.Tensor, *, labels: Sequence[str] | None = None) -> dict[str, float]:
    """Mean CC, KLD and IoU@0.15 over (N, h, w) maps.

    The target is area-resampled to the prediction grid when the sizes differ. CC and KLD are the
    per-map values of :func:`gazeprep.evaluate.metrics.cc` / :func:`~gazeprep.evaluate.metrics.kld`
    averaged over the maps where they are defined (a constant target has no CC, an all-zero target
    no KLD); NaN when no map defines them. ``labels``: one text per map naming its case and target,
    used in the error for a non-finite map (:func:`require_finite_maps`).
    """
    if pred.shape[0] != target.shape[0]:
        raise GazeprepError(f"{pred.shape[0]} predicted maps but {target.shape[0]} target maps")
    require_finite_maps(pred, "prediction", labels)
    require_finite_maps(target, "target", labels)
    if pred.shape[-2:] != target.shape[-2:]:
        target = torch.nn.functional.adaptive_avg_pool2d(target[:, None], (pred.shape[-2], pred.shape[-1]))[:, 0]
    p = pred.detach().cpu().double().numpy()
    t = target.detach().cpu().double().numpy()
    ccs = np.array([EM.cc(a, b) for a, b in zip(p, t)], dtype=np.float64)
    klds = np.array([EM.kld(a, b) for a, b in zip(p, t)], dtype=np.float64)
    return {
        "iou": float(iou(pred, target).mean()),
        "cc": _mean_defined(ccs),
        "kld": _mean_defined(klds),
    }


def _mean_defined(v: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN when there is none."""
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")
