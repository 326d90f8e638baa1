"""Per-epoch heatmap metrics for the training loop.

CC and KLD come from the evaluation area's registry (``gazeprep.evaluate.metrics.cc`` /
``kld``, MIT conventions) when it is installed, so training logs and ``gazeprep evaluate`` agree;
otherwise from the small local torch definitions below, which follow 001/MT-UNet (CC = Pearson on flattened maps; KLD = sum g log(g / p) with both maps sum-normalised)
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


def _evaluation_metrics():
    try:
        from gazeprep.evaluate import metrics as m
    except Exception:  # noqa: BLE001 - the evaluation area is optional for the trainer
        return None
    return m if callable(getattr(m, "cc", None)) and callable(getattr(m, "kld", None)) else None


def map_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean CC, KLD and IoU@0.15 over (N, h, w) maps (target area-resampled to the prediction grid)."""
    if pred.shape[-2:] != target.shape[-2:]:
        target = torch.nn.functional.adaptive_avg_pool2d(target[:, None], pred.shape[-2:])[:, 0]
    out = {"iou": float(iou(pred, target).mean())}
    ext = _evaluation_metrics()
    if ext is not None:
        import numpy as np

        p, t = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
        with np.errstate(all="ignore"):
            ccs = [ext.cc(a, b) for a, b in zip(p, t)]
            klds = [ext.kld(a, b) for a, b in zip(p, t)]
        out["cc"] = float(np.nanmean(ccs)) if np.isfinite(ccs).any() else 0.0
        out["kld"] = float(np.nanmean(klds)) if np.isfinite(klds).any() else float("nan")
        return out
    out.update({"cc": float(cc(pred, target).mean()), "kld": float(kld(pred, target).mean())})
    return out
