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
from typing import overload

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


def selective_mse(
    cam: torch.Tensor, alpha: torch.Tensor, target: torch.Tensor, true_class: torch.Tensor
) -> torch.Tensor:
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

    ``L = L_sm / (2 sigma_sm^2) + L_ce / sigma_ce^2 + ln(sigma_sm + 1) + ln(sigma_ce + 1)``.

    The sigmas are learnt as their logarithms, ``sigma = exp(lg_sigma)``, as GG-CAM's code does
    (``lg_sigma_dissimilarity`` / ``lg_sigma_classification``; hz-zhu/GG-CAM ``my_ResCAMNet.py``):
    positivity is built in, and a tiny initial ``sigma_sm`` is reachable. Learning sigma itself
    cannot work at the paper's initial values (Table 1: 2e-9 for ResNet-50, 1.4e-11 for
    EfficientNetV2-S): the gradient ``-L_sm / sigma^3`` is ~1e26, its square overflows Adam's float32
    second moment and sigma never moves (or becomes NaN). In log space the gradient is
    ``-L_sm / sigma^2 + sigma / (sigma + 1)`` and Adam moves ``lg_sigma`` by about the learning rate
    per step.

    Give either the sigmas (``sigma_sm``, ``sigma_ce``) or their logarithms (``lg_sigma_sm``,
    ``lg_sigma_ce``; the code's values are -23 / 7 for ResNet-50 and -16 / 7 for EfficientNetV2-S).
    """

    def __init__(
        self,
        sigma_sm: float | None = 2e-9,
        sigma_ce: float | None = 1.0,
        lg_sigma_sm: float | None = None,
        lg_sigma_ce: float | None = None,
    ):
        super().__init__()

        def log_of(sigma: float | None, lg: float | None, name: str) -> float:
            if lg is not None:
                return float(lg)
            if sigma is None or float(sigma) <= 0:
                raise ValueError(f"{name} must be > 0 (or give lg_{name})")
            return math.log(float(sigma))

        self.lg_sigma_sm = nn.Parameter(torch.tensor(log_of(sigma_sm, lg_sigma_sm, "sigma_sm")))
        self.lg_sigma_ce = nn.Parameter(torch.tensor(log_of(sigma_ce, lg_sigma_ce, "sigma_ce")))

    @property
    def sigma_sm(self) -> torch.Tensor:
        return torch.exp(self.lg_sigma_sm)

    @property
    def sigma_ce(self) -> torch.Tensor:
        return torch.exp(self.lg_sigma_ce)

    def forward(self, loss_sm: torch.Tensor, loss_ce: torch.Tensor) -> torch.Tensor:
        # 1 / sigma^2 = exp(-2 lg): no division by a float32 square that could underflow to 0
        return (
            loss_sm * torch.exp(-2 * self.lg_sigma_sm) / 2
            + loss_ce * torch.exp(-2 * self.lg_sigma_ce)
            + torch.log1p(self.sigma_sm)
            + torch.log1p(self.sigma_ce)
        )


# ----------------------------------------------------------------------------------------------
# 004 multiple instance learning


NORMALIZATIONS = ("brn", "brn_code", "li", "none")


@overload
def brn_lower_bound(n_factors: int, base: float = BRN_BASE) -> float: ...
@overload
def brn_lower_bound(n_factors: torch.Tensor, base: float = BRN_BASE) -> torch.Tensor: ...
def brn_lower_bound(n_factors: int | torch.Tensor, base: float = BRN_BASE) -> float | torch.Tensor:
    """Lower end of each factor's range under balanced range normalisation (paper 004, 2.2.1).

    ``base ** (1 / n_factors)``; equals 0.98 for 256 factors. ``n_factors`` may be a tensor (one
    count per product); an empty product (0 factors) gives 0, as the code's ``0.0056738 ** (1 / 0)``.
    """
    if isinstance(n_factors, torch.Tensor):
        return base ** (1.0 / n_factors.to(torch.float64))
    if n_factors < 1:
        raise ValueError("n_factors must be >= 1")
    return base ** (1.0 / n_factors)


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; use {', '.join(NORMALIZATIONS)}")


def _image_lower(n_cells: int, normalization: str) -> float:
    """Factor range lower end of the all-cells products (eqs. 1, 3, 4).

    ``brn``: balanced over the ``n_cells`` factors (the paper's rule); ``brn_code`` and ``li``: Li et
    al.'s 0.98 (004's ``forward_inference`` calls ``normalize_p_`` without a count, so its code keeps
    [0.98, 1] there even with balancing on); ``none``: 0."""
    _check_normalization(normalization)
    if normalization == "brn":
        return brn_lower_bound(n_cells)
    return 0.0 if normalization == "none" else LI_LOWER


def _normed_log(p: torch.Tensor, lower: float | torch.Tensor) -> torch.Tensor:
    """``log(lower + (1 - lower) p)``, the log of a range-normalised factor (``lower`` float or a
    tensor broadcastable to ``p``)."""
    return torch.log(lower + (1 - lower) * p)


def mil_image_probability(grid_logits: torch.Tensor, normalization: str = "brn") -> torch.Tensor:
    """Image-level probability, the soft OR over grid cells (paper 004, eq. 1).

    ``C_k(x) = 1 - prod_j (1 - s(g_jk))`` with each factor range-normalised (``brn``: balanced over
    all cells, ``brn_code`` / ``li``: [0.98, 1], ``none``). ``grid_logits``: (B, K, h, w); returns (B, K).
    """
    flat = grid_logits.flatten(2)
    lo = _image_lower(flat.shape[-1], normalization)
    log_neg = F.logsigmoid(-flat) if lo == 0.0 else _normed_log(torch.sigmoid(-flat), lo)
    return -torch.expm1(log_neg.sum(-1))


def annotated_log_likelihood(
    grid_logits: torch.Tensor, cell_targets: torch.Tensor, normalization: str = "brn"
) -> torch.Tensor:
    """``log(prod_{j in B} s(g_j) * prod_{j not in B} (1 - s(g_j)))`` of eq. 2 per image and label: (B, K).

    With balanced range normalisation (``brn`` and ``brn_code``) each of the two products has its
    own factor count ``n_t``: the factors of the evidence product lie in ``[base^(1/|B|), 1]`` and
    those of the other product in ``[base^(1/|G - B|), 1]`` (004's ``p_box`` with
    ``use_balancing``: ``normalize_fn(out, box_label.sum())`` and ``normalize_fn(1 - out,
    (1 - box_label).sum())``). ``li``: [0.98, 1]; ``none``: plain sigmoids.
    """
    _check_normalization(normalization)
    flat = grid_logits.flatten(2)
    tgt = cell_targets.flatten(2).to(flat.dtype)
    if normalization == "none":
        log_pos, log_neg = F.logsigmoid(flat), F.logsigmoid(-flat)
    elif normalization == "li":
        log_pos, log_neg = _normed_log(torch.sigmoid(flat), LI_LOWER), _normed_log(torch.sigmoid(-flat), LI_LOWER)
    else:
        n_pos = tgt.sum(-1, keepdim=True)
        n_neg = tgt.shape[-1] - n_pos
        lo_pos = brn_lower_bound(n_pos).to(flat.dtype)
        lo_neg = brn_lower_bound(n_neg).to(flat.dtype)
        log_pos, log_neg = _normed_log(torch.sigmoid(flat), lo_pos), _normed_log(torch.sigmoid(-flat), lo_neg)
    return (tgt * log_pos + (1 - tgt) * log_neg).sum(-1)


def mil_loss(
    grid_logits: torch.Tensor,
    cell_targets: torch.Tensor,
    annotated: torch.Tensor,
    labels: torch.Tensor,
    lambda_a: float = 3.0,
    normalization: str = "brn",
    reduction: str = "mean",
) -> torch.Tensor:
    """Multiple instance learning loss L_I (paper 004, eqs. 2-5).

    For each image x and label k:

    * annotated (``annotated[x]``): ``L_A = -log(prod_{j in B} s(g_j) * prod_{j not in B} (1 - s(g_j)))``
      where ``B`` = cells with ``cell_targets`` true (eq. 2; :func:`annotated_log_likelihood`),
      weighted by ``lambda_a``;
    * unannotated and positive: ``L_U+ = -log C_k(x)`` (eq. 3);
    * unannotated and negative: ``L_U- = -log prod_j (1 - s(g_j))`` (eq. 4);
    * unannotated with an unknown label (NaN): ignored.

    ``reduction='mean'``: the mean over the batch of the sum over labels (eq. 5's expectation);
    ``'sum'``: the sum over batch and labels, as 004's ``loss_fn_li`` (``.sum()``).

    Parameters
    ----------
    grid_logits: (B, K, h, w) cell logits g.
    cell_targets: (B, K, h, w) bool, cells holding evidence (ET heatmap pooled to the grid > 0.15).
    annotated: (B,) bool, images with a localisation annotation.
    labels: (B, K) float, 1 positive, 0 negative, NaN unknown (used for unannotated images).
    """
    flat = grid_logits.flatten(2)
    loss_a = -annotated_log_likelihood(grid_logits, cell_targets, normalization)  # (B, K)
    lo = _image_lower(flat.shape[-1], normalization)
    sum_neg = (F.logsigmoid(-flat) if lo == 0.0 else _normed_log(torch.sigmoid(-flat), lo)).sum(-1)
    # -log(1 - exp(sum_neg)); the clamp keeps it finite when every factor is exactly 1
    loss_u_pos = -torch.log((-torch.expm1(sum_neg)).clamp(min=1e-12))
    loss_u_neg = -sum_neg
    ann = annotated.view(-1, 1).to(torch.bool)
    known = ~torch.isnan(labels)
    lab = torch.nan_to_num(labels, nan=0.0)
    w_a = ann.expand_as(lab).to(flat.dtype) * lambda_a
    w_up = (~ann & known & (lab > 0.5)).to(flat.dtype)
    w_un = (~ann & known & (lab <= 0.5)).to(flat.dtype)
    total = w_a * loss_a + w_up * loss_u_pos + w_un * loss_u_neg
    if reduction == "sum":
        return total.sum()
    if reduction != "mean":
        raise ValueError(f"reduction must be mean or sum, not {reduction!r}")
    return total.sum(-1).mean()


def multitask_heatmap_bce(
    decoder_logits: torch.Tensor, targets: torch.Tensor, positive_annotated: torch.Tensor, reduction: str = "paper"
) -> torch.Tensor:
    """Pixel-level cross-entropy of the decoder (paper 004, eq. 6).

    ``reduction='paper'``: ``L_T = -E_x sum_k 1_{kA+}(x) mean_j [t_j log s(d_j) + (1 - t_j) log(1 - s(d_j))]``:
    only channels of annotated images whose label is positive contribute; the mean over images
    counts every image of the batch.

    ``reduction='code'``: 004's ``loss_unet``: ``BCEWithLogitsLoss()(d * 1_{kA+}, t)``, the mean over
    all ``B * K * H * W`` elements of the BCE of the *masked* logits; a masked element has logit 0 and
    adds the constant ``log 2`` (no gradient). So the code's L_T is the paper's divided by ``K`` plus a
    constant, and 0 when no channel of the batch is positive and annotated.

    ``decoder_logits`` and ``targets`` (in [0, 1]): (B, K, H, W); ``positive_annotated``: (B, K) bool.
    """
    mask = positive_annotated.to(decoder_logits.dtype)
    t = targets.to(decoder_logits.dtype)
    if reduction == "code":
        if not bool(positive_annotated.any()):
            return decoder_logits.sum() * 0
        return F.binary_cross_entropy_with_logits(decoder_logits * mask[:, :, None, None], t)
    if reduction != "paper":
        raise ValueError(f"reduction must be paper or code, not {reduction!r}")
    per_pixel = F.binary_cross_entropy_with_logits(decoder_logits, t, reduction="none")
    per_channel = per_pixel.flatten(2).mean(-1)
    return (per_channel * mask).sum(-1).mean()


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
