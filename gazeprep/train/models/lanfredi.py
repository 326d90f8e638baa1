"""Label-specific ET-heatmap supervision with MIL (paper 004, Bigolin Lanfredi et al.).

* Encoder E (section 2.4, Figure 3): ResNet-50 whose average pooling and linear layer are replaced by
  "CNN Block 5" = conv, batch norm, ReLU, conv. Multi-resolution: the stride-16 map of layer 3 and the
  upsampled stride-32 map of layer 4 are concatenated, so Block 5 sees 32 x 32 maps at 512 px input
  and outputs a 32 x 32 grid of per-label logits ``g_jk``.
* Image-level output: the soft OR of eq. 1 over the grid (with balanced range normalisation).
* Decoder D (section 2.3): three blocks of bilinear x2 upsampling, convolution and batch norm, one
  output channel per label (256 x 256 at 512 px input), the interpretability output. As in 004's
  code (``DecodingNetwork``, fed ``self.activations``), D reads Block 5's 512 hidden channels after
  its batch norm and ReLU, with widths 512 -> 128 -> 64 -> K, align-corners upsampling, ReLU between
  blocks and batch-norm momentum 0.01 (~0.67M parameters).
* Loss (section 2.5, eq. 7): ``L = L_I + lambda_T L_T`` with the MIL term L_I (eqs. 2-5,
  ``lambda_A = 3``) and the decoder cross-entropy L_T (eq. 6, ``lambda_T = 300``). ET maps are
  max-pooled to the grid (004 code ``ResizeHeatmap``) and thresholded at 0.15 (section 2.8).
  Images without ET data (weak supervision from MIMIC-CXR labels) enter through L_U+ / L_U-.
  ``reduction='code'`` weighs the terms as the code does (L_I summed over images and labels, L_T the
  mean BCE of masked logits against the soft ET map; see :func:`~gazeprep.train.losses.multitask_heatmap_bce`);
  ``'paper'`` follows eqs. 5-6 literally (means over images, binary targets).
* Input: the grey image repeated to 3 channels and ImageNet-normalised twice, as the code does
  (its dataset applies ``transforms.Normalize`` and ``Thoracic.preprocessing`` applies it again).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.losses import mil_image_probability, mil_loss, multitask_heatmap_bce, pool_to
from gazeprep.train.models.base import Batch, GazeModel, InputNorm, LossOutput, timm_feature_channels, timm_model


class LanfrediMIL(GazeModel):
    """Multi-resolution ResNet encoder with a MIL grid head and a heatmap decoder.

    Parameters
    ----------
    label_names: the K labels (004 Table 2 order by default in the registry).
    backbone: timm ResNet name (``resnet50``; tiny ``test_resnet``).
    hidden: channels of Block 5 (the decoder's input).
    decoder_widths: the decoder's first two output widths (the third is K); code: (128, 64).
    weights: optional local backbone state dict.
    normalization: factor normalisation for eq. 1 (``brn``, ``brn_code``, ``li``, ``none``; see
        :mod:`gazeprep.train.losses`).
    concat_upsample: how layer 4 is brought to layer 3's grid before the concat (the code's
        ``F.interpolate(x, size)``: ``nearest``).
    input_norm: see :class:`~gazeprep.train.models.base.InputNorm` (code: ``imagenet_twice``).
    """

    def __init__(
        self,
        label_names: Sequence[str],
        backbone: str = "resnet50",
        hidden: int = 512,
        weights: str | None = None,
        normalization: str = "brn",
        decoder_widths: Sequence[int] = (128, 64),
        concat_upsample: str = "nearest",
        input_norm: str = "imagenet",
    ):
        super().__init__()
        self.class_names = list(label_names)
        self.map_names = list(label_names)
        k = len(self.class_names)
        self.input_norm = InputNorm(input_norm)
        self.encoder = timm_model(backbone, weights=weights, features_only=True, out_indices=(3, 4))
        c3, c4 = timm_feature_channels(self.encoder)
        if concat_upsample not in ("nearest", "bilinear"):
            raise GazeprepError(f"concat_upsample must be nearest or bilinear, not {concat_upsample!r}")
        self.concat_upsample = concat_upsample
        # Block 5 in two parts: the hidden activations (conv, BN, ReLU) feed both the grid head and D
        self.block5 = nn.Sequential(
            nn.Conv2d(c3 + c4, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.grid_head = nn.Conv2d(hidden, k, 1)
        widths = [hidden, *[int(w) for w in decoder_widths], k]
        if len(widths) != 4:
            raise GazeprepError("decoder_widths needs two widths (the decoder has three blocks)")
        blocks: list[nn.Module] = []
        for i in range(3):
            blocks += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                nn.BatchNorm2d(widths[i + 1], momentum=0.01),
            ]
            if i < 2:
                blocks.append(nn.ReLU())
        self.decoder = nn.Sequential(*blocks)
        self.normalization = normalization

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        f3, f4 = self.encoder(self.input_norm(image))
        mode = (
            {"mode": "nearest"} if self.concat_upsample == "nearest" else {"mode": "bilinear", "align_corners": False}
        )
        f4 = F.interpolate(f4, size=f3.shape[-2:], **mode)
        hidden = self.block5(torch.cat([f3, f4], 1))
        grid = self.grid_head(hidden)
        prob = mil_image_probability(grid, self.normalization)
        return {
            "grid_logits": grid,
            "prob": prob,
            "logits": torch.logit(prob.clamp(1e-6, 1 - 1e-6)),
            "decoder_logits": self.decoder(hidden),
        }

    @torch.no_grad()
    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """Decoder output ``sigmoid(D(x))``: (B, K, H/2, W/2)."""
        return torch.sigmoid(self.forward(image)["decoder_logits"])


class LanfrediObjective(nn.Module):
    """``L_I + lambda_T L_T`` (eqs. 5-7). Batch heatmap channels must follow the model's labels.

    ``reduction``: ``code`` (004's arithmetic: L_I summed over images and labels, L_T the mean BCE of
    the masked decoder logits against the *soft* ET map max-pooled to the decoder's grid; the code's
    ``loss_unet``) or ``paper`` (eqs. 5-6: means over images, targets thresholded at ``threshold``).
    ``decoder_target``: ``soft`` or ``binary`` (default: soft for ``code``, binary for ``paper``).
    """

    def __init__(
        self,
        lambda_a: float = 3.0,
        lambda_t: float = 300.0,
        threshold: float = 0.15,
        normalization: str = "brn",
        reduction: str = "paper",
        decoder_target: str | None = None,
    ):
        super().__init__()
        if reduction not in ("paper", "code"):
            raise GazeprepError(f"004 loss reduction must be paper or code, not {reduction!r}")
        decoder_target = decoder_target or ("soft" if reduction == "code" else "binary")
        if decoder_target not in ("soft", "binary"):
            raise GazeprepError(f"decoder_target must be soft or binary, not {decoder_target!r}")
        self.lambda_a, self.lambda_t, self.threshold, self.normalization = lambda_a, lambda_t, threshold, normalization
        self.reduction, self.decoder_target = reduction, decoder_target

    def forward(self, model: LanfrediMIL, batch: Batch) -> LossOutput:
        out = model(batch["image"])
        heat = batch["heatmaps"]
        grid = out["grid_logits"]
        annotated = batch["annotated"].to(torch.bool)
        labels = batch["labels"].to(grid.dtype)
        cells = pool_to(heat, tuple(grid.shape[-2:]), "max") > self.threshold
        l_i = mil_loss(
            grid,
            cells,
            annotated,
            labels,
            self.lambda_a,
            self.normalization,
            "sum" if self.reduction == "code" else "mean",
        )
        dec = out["decoder_logits"]
        dec_target = pool_to(heat, tuple(dec.shape[-2:]), "max")
        pos_ann = annotated[:, None] & (torch.nan_to_num(labels, nan=0.0) > 0.5) & batch["heatmap_valid"]
        tgt = dec_target if self.decoder_target == "soft" else (dec_target > self.threshold)
        l_t = multitask_heatmap_bce(dec, tgt, pos_ann, self.reduction)
        total = l_i + self.lambda_t * l_t
        pred_maps = target_maps = None
        if bool(pos_ann.any()):
            with torch.no_grad():
                pred_maps = torch.sigmoid(dec)[pos_ann]
                target_maps = dec_target[pos_ann]
        return LossOutput(
            total,
            {"mil": float(l_i.detach()), "decoder": float(l_t.detach())},
            pred_maps,
            target_maps,
            out["prob"].detach(),
        )
