"""Loss functions of the five papers, as plain torch functions and small modules.

Shapes: ``B`` batch, ``K``/``C`` labels or classes, ``h, w`` a model's grid or map size. Heatmap
targets are floats in [0, 1] (max-normalised gaze maps) unless a docstring says otherwise.

Where each comes from:

* :func:`selective_mse`, :class:`UncertaintyWeighting` - GG-CAM (paper 002, section 3.3, eqs. 9-11).
* :func:`mil_loss`, :func:`mil_image_probability`, :func:`brn_lower_bound`,
  :func:`multitask_heatmap_bce` - Lanfredi et al. (paper 004, sections 2.2-2.5, eqs. 1-7).
* :func:`saliency_kl` - Qiu et al. (paper 001, section 4.3.2; KL as in MT-UNet) and
  :func:`triplet_loss` (section 4.3.1, contrastive triplet pretraining).
* :func:`logit_l2`, :func:`dice_loss`, :func:`iai_heatmap_loss` - Pham et al. I-AI (paper 000,
  section 3.2, eqs. 2-4).
* :func:`heatmap_bce` - Karargyris et al. U-Net baseline (paper 003, section 3.1: BCE with logits for
  the decoder mask against the static gaze heatmap).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Base of the balanced range normalisation (paper 004, section 2.2.1): factors are mapped to
#: ``[BRN_BASE ** (1 / n), 1]`` so that a product of ``n`` factors spans ``[BRN_BASE, 1]``.
BRN_BASE = 0.0056738
#: Li et al.'s fixed factor range ``[0.98, 1]`` (paper 004, section 2.2.1).
LI_LOWER = 0.98


# ----------------------------------------------------------------------------------------------
# 002 GG-CAM


def selective_mse(cam: torch.Tensor, alpha: torch.Tensor, target: torch.Tensor, true_class: torch.Tensor) -> torch.Tensor:
    """Selective MSE of GG-CAM (paper 002, eqs. 9-10).

    ``L_sm = mean_{i,j} (sigmoid(alpha * CAM[Y])_{ij} - Psi_{ij})^2`` where ``Y`` is the true class:
    only the CAM slice of the true class is supervised. Averaged over the batch.

    Parameters
    ----------
    cam: (B, C, h, w) class activation maps Omega.
    alpha: scalar tensor, the trainable scale of eq. 10.
    target: (B, h, w) gaze heatmap Psi in [0, 1] at the CAM resolution.
    true_class: (B,) long class indices Y.
    """
    idx = true_class.view(-1, 1, 1, 1).expand(-1, 1, cam.shape[2], cam.shape[3])
    selected = cam.gather(1, idx).squeeze(1)
    return ((torch.sigmoid(alpha * selected) - target) ** 2).mean()


class UncertaintyWeighting(nn.Module):
    """GG-CAM's uncertainty-weighted total loss (paper 002, eq. 11).

    ``L = L_sm / (2 sigma_sm^2) + L_ce / sigma_ce^2 + ln(sigma_sm + 1) + ln(sigma_ce + 1)`` with
    trainable ``sigma_sm, sigma_ce > 0`` (positivity kept with ``abs`` plus a tiny floor). The paper
    initialises ``sigma_sm`` near 0 (2e-9 for ResNet-50, 1.4e-11 for EfficientNetV2-S, Table 1) and
    ``sigma_ce = 1``.
    """

    def __init__(self, sigma_sm: float = 2e-9, sigma_ce: float = 1.0):
        super().__init__()
        self.sigma_sm = nn.Parameter(torch.tensor(float(sigma_sm)))
        self.sigma_ce = nn.Parameter(torch.tensor(float(sigma_ce)))

    def forward(self, loss_sm: torch.Tensor, loss_ce: torch.Tensor) -> torch.Tensor:
        s_sm = self.sigma_sm.abs() + 1e-12
        s_ce = self.sigma_ce.abs() + 1e-12
        return loss_sm / (2 * s_sm**2) + loss_ce / s_ce**2 + torch.log(s_sm + 1) + torch.log(s_ce + 1)


# ----------------------------------------------------------------------------------------------
# 004 multiple instance learning


def brn_lower_bound(n_factors: int, base: float = BRN_BASE) -> float:
    """Lower end of each factor's range under balanced range normalisation (paper 004, 2.2.1).

    ``base ** (1 / n_factors)``; equals 0.98 for 256 factors.
    """
    if n_factors < 1:
        raise ValueError("n_factors must be >= 1")
    return base ** (1.0 / n_factors)


def _factor_logs(grid_logits: torch.Tensor, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    """log of the normalised factors s(g) and 1 - s(g) of eqs. 1-4, per cell: (B, K, n) each."""
    flat = grid_logits.flatten(2)
    n = flat.shape[-1]
    if normalization == "brn":
        lo = brn_lower_bound(n)
    elif normalization == "li":
        lo = LI_LOWER
    elif normalization == "none":
        return F.logsigmoid(flat), F.logsigmoid(-flat)
    else:
        raise ValueError(f"unknown normalization {normalization!r}; use brn, li or none")
    s = torch.sigmoid(flat)
    return torch.log(lo + (1 - lo) * s), torch.log(lo + (1 - lo) * (1 - s))


def mil_image_probability(grid_logits: torch.Tensor, normalization: str = "brn") -> torch.Tensor:
    """Image-level probability, the soft OR over grid cells (paper 004, eq. 1).

    ``C_k(x) = 1 - prod_j (1 - s(g_jk))`` with each factor range-normalised (``brn``: balanced,
    ``li``: [0.98, 1], ``none``). ``grid_logits``: (B, K, h, w); returns (B, K).
    """
    _, log_neg = _factor_logs(grid_logits, normalization)
    return -torch.expm1(log_neg.sum(-1))


def mil_loss(
    grid_logits: torch.Tensor,
    cell_targets: torch.Tensor,
    annotated: torch.Tensor,
    labels: torch.Tensor,
    lambda_a: float = 3.0,
    normalization: str = "brn",
) -> torch.Tensor:
    """Multiple instance learning loss L_I (paper 004, eqs. 2-5).

    For each image x and label k:

    * annotated (``annotated[x]``): ``L_A = -log(prod_{j in B} s(g_j) * prod_{j not in B} (1 - s(g_j)))``
      where ``B`` = cells with ``cell_targets`` true (eq. 2), weighted by ``lambda_a``;
    * unannotated and positive: ``L_U+ = -log C_k(x)`` (eq. 3);
    * unannotated and negative: ``L_U- = -log prod_j (1 - s(g_j))`` (eq. 4);
    * unannotated with an unknown label (NaN): ignored.

    Returns the mean over the batch of the sum over labels (eq. 5).

    Parameters
    ----------
    grid_logits: (B, K, h, w) cell logits g.
    cell_targets: (B, K, h, w) bool, cells holding evidence (ET heatmap pooled to the grid > 0.15).
    annotated: (B,) bool, images with a localisation annotation.
    labels: (B, K) float, 1 positive, 0 negative, NaN unknown (used for unannotated images).
    """
    log_pos, log_neg = _factor_logs(grid_logits, normalization)
    tgt = cell_targets.flatten(2).to(log_pos.dtype)
    loss_a = -(tgt * log_pos + (1 - tgt) * log_neg).sum(-1)  # (B, K)
    sum_neg = log_neg.sum(-1)
    # -log(1 - exp(sum_neg)); the clamp keeps it finite when every factor is exactly 1
    loss_u_pos = -torch.log((-torch.expm1(sum_neg)).clamp(min=1e-12))
    loss_u_neg = -sum_neg
    ann = annotated.view(-1, 1).to(torch.bool)
    known = ~torch.isnan(labels)
    lab = torch.nan_to_num(labels, nan=0.0)
    w_a = ann.expand_as(lab).to(log_pos.dtype) * lambda_a
    w_up = (~ann & known & (lab > 0.5)).to(log_pos.dtype)
    w_un = (~ann & known & (lab <= 0.5)).to(log_pos.dtype)
    total = w_a * loss_a + w_up * loss_u_pos + w_un * loss_u_neg
    return total.sum(-1).mean()


def multitask_heatmap_bce(decoder_logits: torch.Tensor, targets: torch.Tensor, positive_annotated: torch.Tensor) -> torch.Tensor:
    """Pixel-level cross-entropy of the decoder (paper 004, eq. 6).

    ``L_T = -E_x sum_k 1_{kA+}(x) mean_j [t_j log s(d_j) + (1 - t_j) log(1 - s(d_j))]``: only channels
    of annotated images whose label is positive contribute; the mean over images counts every image
    of the batch. ``decoder_logits`` and ``targets`` (binary, thresholded ET maps): (B, K, H, W);
    ``positive_annotated``: (B, K) bool.
    """
    per_pixel = F.binary_cross_entropy_with_logits(decoder_logits, targets.to(decoder_logits.dtype), reduction="none")
    per_channel = per_pixel.flatten(2).mean(-1)
    return (per_channel * positive_annotated.to(per_channel.dtype)).sum(-1).mean()


# ----------------------------------------------------------------------------------------------
# 001 KL saliency loss and triplet pretraining


def saliency_kl(pred_logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL divergence between a gaze map and a predicted saliency distribution (paper 001, 4.3.2).

    The prediction is a log-softmax over all pixels of ``pred_logits`` (B, H, W); the target (B, H, W)
    is normalised to sum 1 per image. Returns ``mean_b sum_ij t log(t / p)`` (PyTorch ``batchmean``).
    Images whose target sums to 0 contribute 0.
    """
    logp = F.log_softmax(pred_logits.flatten(1), dim=1)
    t = target.flatten(1).clamp(min=0)
    mass = t.sum(1, keepdim=True)
    t = t / mass.clamp(min=eps)
    kl = torch.xlogy(t, t) - t * logp
    return kl.sum(1).mean()


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Batch-hard triplet loss for contrastive pretraining (paper 001, 4.3.1; Hoffer & Ailon 2015).

    For each anchor with at least one positive (same class, other sample) and one negative, takes
    the farthest positive and the closest negative (Euclidean):
    ``mean max(0, d(a, p) - d(a, n) + margin)``. ``embeddings``: (B, D); ``labels``: (B,) long.
    Returns 0 (with a graph) when no anchor has both.
    """
    d = torch.cdist(embeddings, embeddings)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask = same & ~eye
    neg_mask = ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    d_pos = torch.where(pos_mask, d, torch.full_like(d, -math.inf)).max(1).values
    d_neg = torch.where(neg_mask, d, torch.full_like(d, math.inf)).min(1).values
    return F.relu(d_pos - d_neg + margin)[valid].mean()


# ----------------------------------------------------------------------------------------------
# 000 I-AI heatmap predictor


def logit_l2(pred_logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """L2 on logits (paper 000, eq. 2): mean squared difference between the predicted logit map and
    ``logit(target)``, with the target clamped to [eps, 1 - eps] so the logit stays finite."""
    t = target.clamp(eps, 1 - eps)
    return ((pred_logits - torch.log(t / (1 - t))) ** 2).mean()


def dice_loss(pred_prob: torch.Tensor, target_mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per map, averaged: ``1 - (2 sum(p m) + s) / (sum p + sum m + s)``.

    ``pred_prob`` and ``target_mask``: (B, ...) with values in [0, 1]; the sums run over all but the
    first dimension. Used by paper 000 (section 3.2, "standard dice loss as in [6]").
    """
    p = pred_prob.flatten(1)
    m = target_mask.flatten(1).to(p.dtype)
    num = 2 * (p * m).sum(1) + smooth
    den = p.sum(1) + m.sum(1) + smooth
    return (1 - num / den).mean()


def iai_heatmap_loss(
    pred_logits: torch.Tensor,
    target: torch.Tensor,
    lambdas: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, dict[str, float]]:
    """I-AI adapter loss ``L_h = l1 L2 + l2 L_ce + l3 L_dice`` (paper 000, eqs. 2-4).

    The masks of eq. 3 are ``target > 0`` (ground truth); the prediction side uses the soft
    probability ``sigmoid(logits)`` so the mask losses have a gradient. ``pred_logits`` and ``target``:
    (B, H, W) or (B, T, H, W). Returns the total and its parts.
    """
    mask = (target > 0).to(pred_logits.dtype)
    l2 = logit_l2(pred_logits, target)
    ce = F.binary_cross_entropy_with_logits(pred_logits, mask)
    dice = dice_loss(torch.sigmoid(pred_logits), mask)
    total = lambdas[0] * l2 + lambdas[1] * ce + lambdas[2] * dice
    return total, {"l2": float(l2.detach()), "bce": float(ce.detach()), "dice": float(dice.detach())}


# ----------------------------------------------------------------------------------------------
# 003 Karargyris U-Net


def heatmap_bce(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits between a decoder mask and a soft gaze heatmap in [0, 1] (paper 003, 3.1)."""
    return F.binary_cross_entropy_with_logits(pred_logits, target.clamp(0, 1))


def prob_bce(pred_prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """BCE between a probability-like map (e.g. a normalised guided-backprop map) and a target map."""
    p = pred_prob.clamp(eps, 1 - eps)
    t = target.clamp(0, 1)
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()


def pool_to(maps: torch.Tensor, size: tuple[int, int], mode: str = "max") -> torch.Tensor:
    """Resize (B, T, H, W) maps to ``size``: adaptive max pooling (004's ``ResizeHeatmap``, keeps every
    positive region) or ``avg``/``bilinear`` resampling."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if mode == "max":
        return F.adaptive_max_pool2d(maps, size)
    if mode == "avg":
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
