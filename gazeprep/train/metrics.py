"""Per-epoch heatmap metrics for the training loop.

Small local definitions (torch, batched, so the loop needs no conversion), following
001/MT-UNet (CC = Pearson on flattened maps; KLD = sum g log(g / p) with both maps sum-normalised)
and 004 (IoU of ``pred > t`` against ``target > t``).
"""

from __future__ import annotations

import torch

EPS = 1e-12


def cc(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per map: (N, h, w) x 2 -> (N,). Constant maps give 0."""
    p = pred.flatten(1).double()
    t = target.flatten(1).double()
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    den = (p.norm(dim=1) * t.norm(dim=1)).clamp(min=EPS)
    return ((p * t).sum(1) / den).float()


def kld(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || pred) per map after sum-normalising both: (N,)."""
    p = pred.flatten(1).double().clamp(min=0)
    t = target.flatten(1).double().clamp(min=0)
    p = p / p.sum(1, keepdim=True).clamp(min=EPS)
    t = t / t.sum(1, keepdim=True).clamp(min=EPS)
    return (t * torch.log(EPS + t / (p + EPS))).sum(1).float()


def iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """IoU of ``pred > threshold`` and ``target > threshold`` per map (0 when both are empty)."""
    a = pred.flatten(1) > threshold
    b = target.flatten(1) > threshold
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def map_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean CC, KLD and IoU@0.15 over (N, h, w) maps (target area-resampled to the prediction grid)."""
    if pred.shape[-2:] != target.shape[-2:]:
        target = torch.nn.functional.adaptive_avg_pool2d(target[:, None], pred.shape[-2:])[:, 0]
    return {"cc": float(cc(pred, target).mean()), "kld": float(kld(pred, target).mean()), "iou": float(iou(pred, target).mean())}
