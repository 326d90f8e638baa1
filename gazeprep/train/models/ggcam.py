"""GG-CAM: gaze-guided class activation mapping (paper 002, Zhu et al.).

* CAM layer (section 3.1, eqs. 1-6): replaces global average pooling + linear layer. With backbone
  features ``A`` (G x H x W), weights ``Lambda`` (C x G) and bias ``lambda`` (C), it computes the CAM
  ``Omega_c = sum_k Lambda_ck A_k`` (eq. 4) explicitly and the logits as its spatial mean plus bias
  (eq. 5), so it has exactly the parameters of the linear layer it replaces.
* Selective MSE on ``sigmoid(alpha * Omega_Y)`` of the true class Y against the gaze map (eqs. 9-10;
  ``alpha`` is a trainable scalar) and the uncertainty-weighted total loss (eq. 11):
  :class:`GGCAMObjective`.
* Backbones (section 4.2): ResNet-50 and EfficientNetV2-S (timm ``resnet50`` /
  ``tf_efficientnetv2_s``); the gaze map is resampled to the CAM resolution and max-normalised
  (section 3.2, Algorithm 1).

Where the public code (hz-zhu/GG-CAM) and the paper differ, the presets follow the code
(docs/trainer.md lists each item): the CAM averages the weighted feature maps over channels
(``CAMLayer.forward``: ``(weight * x).mean(2)``; ``cam_reduce='mean'``) where eq. 4 sums them, the
sigmas are learnt as logarithms (:class:`~gazeprep.train.losses.UncertaintyWeighting`) and so is
alpha (``lg_scale``; ``log_alpha``). One code line is *not* reproduced: ``compute_loss`` passes
``sigmoid(Y * k + shift)`` (the labels) as the class index and MSE on the raw CAM, which selects
class 0's CAM for every image; gazeprep supervises ``sigmoid(alpha * CAM_Y)`` of the true class as
eqs. 9-10 say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.losses import UncertaintyWeighting, selective_mse
from gazeprep.train.models.base import Batch, GazeModel, InputNorm, LossOutput, timm_model, timm_num_features


class CAMLayer(nn.Module):
    """Classification head that outputs both logits y (B, C) and the CAM Omega (B, C, H, W).

    ``reduce='sum'``: ``Omega_c = sum_k Lambda_ck A_k`` (eq. 4); ``'mean'``: the same divided by the
    number of features G, as the code's ``CAMLayer`` (``(weight * x).mean(2)``). Weights and bias
    start uniform in +-1/sqrt(G) (``nn.Linear``'s and the code's initialisation)."""

    def __init__(self, in_features: int, num_classes: int, reduce: str = "sum"):
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise GazeprepError(f"cam_reduce must be sum or mean, not {reduce!r}")
        self.reduce = reduce
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # as nn.Linear: U(+-1/sqrt(G))
        bound = 1 / in_features**0.5
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        omega = torch.einsum("ck,bkhw->bchw", self.weight, a)
        if self.reduce == "mean":
            omega = omega / a.shape[1]
        return omega.mean(dim=(2, 3)) + self.bias, omega


class GGCAM(GazeModel):
    """A CNN backbone with the CAM layer and GG-CAM's trainable ``alpha``.

    Parameters
    ----------
    backbone: timm model name (``resnet50``, ``tf_efficientnetv2_s``; tiny: ``test_resnet``).
    class_names: class ids (EGD-CXR: Normal, CHF, Pneumonia).
    weights: optional local backbone state dict.
    alpha_init: initial ``alpha`` of eq. 10.
    backbone_kwargs: extra timm arguments (tiny presets use ``output_stride=8`` for a finer CAM).
    cam_reduce: ``sum`` (eq. 4) or ``mean`` (the code); see :class:`CAMLayer`.
    log_alpha: learn ``log(alpha)`` (the code's ``lg_scale``) instead of alpha.
    input_norm: the input normalisation (:class:`~gazeprep.train.models.base.InputNorm`); the code
        divides each image by its maximum (``max``) and trains from random init.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        class_names: Sequence[str] = ("normal", "chf", "pneumonia"),
        weights: str | None = None,
        alpha_init: float = 1.0,
        backbone_kwargs: dict | None = None,
        cam_reduce: str = "sum",
        log_alpha: bool = False,
        input_norm: str = "none",
    ):
        super().__init__()
        self.input_norm = InputNorm(input_norm)
        self.features = timm_model(backbone, weights=weights, num_classes=0, global_pool="", **(backbone_kwargs or {}))
        self.class_names = list(class_names)
        self.map_names = list(class_names)
        self.cam = CAMLayer(timm_num_features(self.features), len(self.class_names), cam_reduce)
        self.log_alpha = bool(log_alpha)
        if self.log_alpha:
            self.lg_alpha = nn.Parameter(torch.tensor(math.log(float(alpha_init))))
        else:
            self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))

    def alpha_value(self) -> torch.Tensor:
        """The scale alpha of eq. 10 (``exp(lg_alpha)`` with ``log_alpha``)."""
        return torch.exp(self.lg_alpha) if self.log_alpha else self.alpha

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, omega = self.cam(self.features(self.input_norm(image)))
        return {"logits": logits, "cam": omega}

    @torch.no_grad()
    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """``sigmoid(alpha * Omega)`` for every class: (B, C, h, w) at the CAM resolution."""
        return torch.sigmoid(self.alpha_value() * self.forward(image)["cam"])


def resample_max_norm(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-resample (B, H, W) maps to ``size`` and divide each by its max (zeros stay zeros)."""
    r = F.adaptive_avg_pool2d(maps[:, None], size)[:, 0]
    peak = r.flatten(1).max(1).values.clamp(min=1e-12)
    return r / peak[:, None, None]


class GGCAMObjective(nn.Module):
    """Eq. 11 over cross-entropy (eq. 7) and selective MSE (eq. 9).

    ``target_channel``: the batch heatmap channel holding the gaze map (``None`` = use the channel of
    the true class, for exports with one map per label). Samples without a known single class or
    without a gaze map do not enter L_sm.
    """

    def __init__(
        self,
        sigma_sm: float | None = 2e-9,
        sigma_ce: float | None = 1.0,
        target_channel: int | None = 0,
        lg_sigma_sm: float | None = None,
        lg_sigma_ce: float | None = None,
    ):
        super().__init__()
        self.weighting = UncertaintyWeighting(sigma_sm, sigma_ce, lg_sigma_sm, lg_sigma_ce)
        self.target_channel = target_channel

    def forward(self, model: GGCAM, batch: Batch) -> LossOutput:
        out = model(batch["image"])
        y = batch["class_index"]
        known = y >= 0
        loss_ce = F.cross_entropy(out["logits"][known], y[known]) if bool(known.any()) else out["logits"].sum() * 0
        if self.target_channel is None:
            ch = y.clamp(min=0)
        else:
            ch = torch.full_like(y, self.target_channel)
        has_map = batch["heatmap_valid"].gather(1, ch[:, None])[:, 0] & known
        cam = out["cam"]
        pred_maps = target_maps = None
        if bool(has_map.any()):
            maps = batch["heatmaps"][torch.arange(len(y)), ch]
            target = resample_max_norm(maps[has_map], tuple(cam.shape[-2:]))
            alpha = model.alpha_value()
            loss_sm = selective_mse(cam[has_map], alpha, target, y[has_map])
            with torch.no_grad():
                sel = cam[has_map].gather(1, y[has_map].view(-1, 1, 1, 1).expand(-1, 1, *cam.shape[-2:]))[:, 0]
                pred_maps, target_maps = torch.sigmoid(alpha * sel), target
        else:
            loss_sm = cam.sum() * 0
        total = self.weighting(loss_sm, loss_ce)
        parts = {
            "ce": float(loss_ce.detach()),
            "sm": float(loss_sm.detach()),
            "sigma_sm": float(self.weighting.sigma_sm.abs().detach()),
            "sigma_ce": float(self.weighting.sigma_ce.abs().detach()),
        }
        return LossOutput(total, parts, pred_maps, target_maps, torch.softmax(out["logits"].detach(), 1))
