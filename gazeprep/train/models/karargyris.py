"""Karargyris et al. U-Net baseline and its guided-backprop / deconvnet heatmap losses (paper 003).

* Model (section 3.1, Figure 11): a U-Net (segmentation-models-pytorch ``Unet``) with an
  EfficientNet-b0 encoder, a classification head on the bottleneck and a decoder predicting the
  static gaze heatmap. Both losses are BCE with logits (class and heatmap). The EGD-CXR code
  (cxr-eye-gaze/eye-gaze-dataset ``Experiments/main_Unet.py``, README command of the U-Net run)
  uses smp's ``timm-efficientnet-b0`` encoder (noisy-student weights), a dropout of 0.5 before the
  classification head, ImageNet normalisation and the total loss
  ``gamma * L_class + (1 - gamma) * L_heatmap`` with gamma 0.41731 (``class_weight`` and
  ``seg_weight`` here).
* Heatmap-loss variants (section 3.2):

  - ``baseline``: BCE(decoder mask, gaze heatmap);
  - ``set1`` (3.2.1): the saliency map of the true class, produced by guided back-propagation or
    deconvnet *during training* (double back-propagation, so the loss trains the weights), against
    the gaze heatmap; the decoder is not supervised;
  - ``set2`` (3.2.2): decoder mask against the (detached) saliency map;
  - ``set3`` (3.2.3): ``ratio * BCE(mask, gaze) + (1 - ratio) * BCE(saliency, gaze)``.

Guided back-propagation passes only positive gradients through an activation where its input was
positive (its local derivative times ``relu(grad)``); deconvnet passes ``relu(grad)`` whatever the
input (Springenberg et al. 2015; paper 003, section 2). For smooth activations (SiLU in
EfficientNet) "local derivative" is the activation's derivative.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.losses import heatmap_bce, prob_bce
from gazeprep.train.models.base import Batch, GazeModel, InputNorm, LossOutput, load_weights


class _RuleAct(torch.autograd.Function):
    """Activation whose backward follows the guided/deconvnet rule; twice differentiable."""

    # ``ctx`` is torch's FunctionCtx, which declares none of the attributes a Function stores on it
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kind: str, mode: str) -> torch.Tensor:  # noqa: D401
        ctx.save_for_backward(x)
        ctx.kind, ctx.mode = kind, mode
        return F.relu(x) if kind == "relu" else F.silu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        g = F.relu(grad)
        if ctx.mode == "deconvnet":
            return g, None, None
        if ctx.kind == "relu":
            return g * (x > 0).to(g.dtype), None, None
        s = torch.sigmoid(x)
        return g * (s * (1 + x * (1 - s))), None, None


class RuleActivation(nn.Module):
    def __init__(self, kind: str, mode: str):
        super().__init__()
        self.kind, self.mode = kind, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _RuleAct.apply(x, self.kind, self.mode)
        return out


@contextlib.contextmanager
def backprop_rules(model: nn.Module, mode: str) -> Iterator[None]:
    """Temporarily replace ReLU/SiLU modules of ``model`` by guided (``guided``) or deconvnet
    (``deconvnet``) activations; restores the originals on exit."""
    if mode not in ("guided", "deconvnet"):
        raise GazeprepError(f"unknown heatmap generator {mode!r}; use guided or deconvnet")
    swapped: list[tuple[nn.Module, str, nn.Module | None]] = []
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            kind = "relu" if isinstance(child, (nn.ReLU, nn.ReLU6)) else "silu" if isinstance(child, nn.SiLU) else None
            if kind is not None:
                parent._modules[name] = RuleActivation(kind, mode)
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            parent._modules[name] = child


def backprop_saliency(
    model: KarargyrisUNet, image: torch.Tensor, classes: torch.Tensor, mode: str, create_graph: bool
) -> torch.Tensor:
    """Guided-backprop/deconvnet map of each image's class score: (B, H, W) in [0, 1].

    ``|d y_c / d x|`` maximised over colour channels and divided by its per-image max. With
    ``create_graph`` the map stays differentiable with respect to the weights.
    """
    x = image.detach().requires_grad_(True)
    with backprop_rules(model, mode):
        logits = model(x)["logits"]
        score = logits.gather(1, classes.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    sal = grad.abs().amax(1)
    return sal / sal.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]


class KarargyrisUNet(GazeModel):
    """smp ``Unet`` with an auxiliary classification head (paper 003, Figure 11).

    Parameters
    ----------
    class_names: classes of the classification head (EGD-CXR: normal, chf, pneumonia).
    encoder: smp encoder name (``efficientnet-b0``; tiny ``tu-test_efficientnet``).
    decoder_channels: smp decoder widths (tiny configs shrink them).
    weights: optional local state dict for the encoder.
    dropout: dropout before the classification head (code: 0.5).
    input_norm: see :class:`~gazeprep.train.models.base.InputNorm` (code: ``imagenet``).
    """

    def __init__(
        self,
        class_names: Sequence[str] = ("normal", "chf", "pneumonia"),
        encoder: str = "efficientnet-b0",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        encoder_depth: int = 5,
        weights: str | None = None,
        map_names: Sequence[str] = ("full",),
        dropout: float = 0.0,
        input_norm: str = "imagenet",
    ):
        super().__init__()
        from gazeprep._torchvision_compat import ensure_torchvision

        ensure_torchvision()
        import segmentation_models_pytorch as smp

        self.class_names = list(class_names)
        self.map_names = list(map_names)
        self.input_norm = InputNorm(input_norm)
        self.net = smp.Unet(
            encoder_name=encoder,
            encoder_weights=None,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels)[:encoder_depth],
            in_channels=3,
            classes=len(self.map_names),
            aux_params={"classes": len(self.class_names), "dropout": float(dropout)},
        )
        if weights:
            load_weights(self.net.encoder, weights)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        mask, logits = self.net(self.input_norm(image))
        return {"logits": logits, "mask_logits": mask}

    @torch.no_grad()
    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(image)["mask_logits"])


class KarargyrisObjective(nn.Module):
    """Class BCE plus one of 003's heatmap losses (see module docstring).

    ``variant``: baseline, set1, set2, set3; ``generator``: guided or deconvnet; ``ratio``: set 3's
    weight of the decoder term; ``class_weight`` and ``seg_weight``: weights of the class and heatmap
    terms (the code: ``gamma`` and ``1 - gamma``).
    """

    def __init__(
        self,
        variant: str = "baseline",
        generator: str = "guided",
        ratio: float = 0.5,
        seg_weight: float = 1.0,
        target_channel: int = 0,
        class_weight: float = 1.0,
    ):
        super().__init__()
        if variant not in ("baseline", "set1", "set2", "set3"):
            raise GazeprepError(f"unknown 003 loss variant {variant!r}; use baseline, set1, set2 or set3")
        self.variant, self.generator, self.ratio, self.seg_weight, self.target_channel = (
            variant,
            generator,
            ratio,
            seg_weight,
            target_channel,
        )
        self.class_weight = class_weight
        self.needs_grad = variant != "baseline"  # saliency maps need autograd even when evaluating

    def forward(self, model: KarargyrisUNet, batch: Batch) -> LossOutput:
        out = model(batch["image"])
        labels = batch["labels"].to(out["logits"].dtype)
        known = ~torch.isnan(labels)
        cls = (
            F.binary_cross_entropy_with_logits(out["logits"][known], labels[known])
            if bool(known.any())
            else out["logits"].sum() * 0
        )
        valid = batch["heatmap_valid"][:, self.target_channel]
        mask_logits = out["mask_logits"][:, 0]
        target = batch["heatmaps"][:, self.target_channel]
        if tuple(target.shape[-2:]) != tuple(mask_logits.shape[-2:]):
            target = F.interpolate(target[:, None], size=mask_logits.shape[-2:], mode="bilinear", align_corners=False)[
                :, 0
            ]
        parts = {"cls": float(cls.detach())}
        seg = mask_logits.sum() * 0
        pred_maps = target_maps = None
        if bool(valid.any()):
            m, t = mask_logits[valid], target[valid]
            if self.variant == "baseline":
                seg = heatmap_bce(m, t)
                pred_maps = torch.sigmoid(m.detach())
            else:
                classes = batch["class_index"].clamp(min=0)[valid]
                sal = backprop_saliency(
                    model, batch["image"][valid], classes, self.generator, create_graph=self.variant in ("set1", "set3")
                )
                sal = F.interpolate(sal[:, None], size=t.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                if self.variant == "set1":
                    seg = prob_bce(sal, t)
                elif self.variant == "set2":
                    seg = heatmap_bce(m, sal.detach())
                else:
                    seg = self.ratio * heatmap_bce(m, t) + (1 - self.ratio) * prob_bce(sal, t)
                pred_maps = sal.detach() if self.variant == "set1" else torch.sigmoid(m.detach())
            parts["seg"] = float(seg.detach())
            target_maps = t
        return LossOutput(
            self.class_weight * cls + self.seg_weight * seg,
            parts,
            pred_maps,
            target_maps,
            torch.sigmoid(out["logits"].detach()),
        )
