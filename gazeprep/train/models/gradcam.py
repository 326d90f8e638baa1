"""Grad-CAM family baselines: a plain CNN classifier explained post hoc with ``pytorch-grad-cam``.

Papers 001 (chapter 3, Grad-CAM quality across architectures) and 003 (Grad-CAM versus the U-Net
decoder maps) compare gaze maps with Grad-CAM explanations of an ordinary classifier. The classifier
is a timm backbone with global average pooling and a linear layer, trained with cross-entropy; its
maps come from ``pytorch_grad_cam`` (``gradcam``, ``gradcam++``, ``xgradcam``, ``eigencam``,
``layercam``, ``hirescam``, ``scorecam``) on the last convolutional stage, for the predicted class (or a
given one), min-max normalised to [0, 1] by the library.

001's chapter 3 protocol (section 3.2.2): CLAHE and a z-transform of every image (CLAHE is a data
option, ``data.clahe``; the z-score is this model's ``input_norm='zscore'``), 224 x 224 inputs,
ImageNet-pretrained backbones, Adam 1e-4 for 50 epochs (CNNs), augmentation with Gaussian noise,
rotations up to 10 degrees, horizontal flips and brightness/contrast shifts (``data.augment``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.models.base import Batch, GazeModel, InputNorm, LossOutput, timm_last_feature_module, timm_model

METHODS = ("gradcam", "gradcam++", "xgradcam", "eigencam", "layercam", "hirescam", "scorecam")


def cam_class(method: str) -> type:
    """The ``pytorch_grad_cam`` class for ``method`` (a ``BaseCAM`` subclass; the library is untyped)."""
    from gazeprep._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    import pytorch_grad_cam as pgc

    table = {
        "gradcam": pgc.GradCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "xgradcam": pgc.XGradCAM,
        "eigencam": pgc.EigenCAM,
        "layercam": pgc.LayerCAM,
        "hirescam": pgc.HiResCAM,
        "scorecam": pgc.ScoreCAM,
    }
    if method not in table:
        raise GazeprepError(f"unknown CAM method {method!r}; use one of {', '.join(METHODS)}")
    return table[method]


class CAMBaseline(GazeModel):
    """timm classifier + a Grad-CAM-family explainer.

    Parameters
    ----------
    class_names: classes; backbone: timm name (``resnet50``, ``densenet201``, ...; tiny ``test_resnet``);
    method: CAM method (see :data:`METHODS`); weights: optional local state dict;
    input_norm: see :class:`~gazeprep.train.models.base.InputNorm` (001 ch. 3: ``zscore``).
    """

    def __init__(
        self,
        class_names: Sequence[str] = ("normal", "chf", "pneumonia"),
        backbone: str = "resnet50",
        method: str = "gradcam",
        weights: str | None = None,
        input_norm: str = "imagenet",
    ):
        super().__init__()
        self.class_names = list(class_names)
        self.map_names = ["full"]
        self.method = method
        cam_class(method)  # validate early
        self.input_norm = InputNorm(input_norm)
        self.net = timm_model(backbone, weights=weights, num_classes=len(self.class_names))
        self._target_layer_name = timm_last_feature_module(self.net)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(self.input_norm(image))}

    def target_layer(self) -> nn.Module:
        return self.net.get_submodule(self._target_layer_name)

    def explain(self, image: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """CAM maps (B, H, W) in [0, 1] for ``classes`` (default: the predicted class)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        was = self.training
        self.eval()
        wrapped = _LogitsOnly(self.net, self.input_norm)
        targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]
        with cam_class(self.method)(model=wrapped, target_layers=[self.target_layer()]) as cam:
            maps = cam(input_tensor=image, targets=targets)
        self.train(was)
        return torch.as_tensor(maps, dtype=torch.float32, device=image.device)

    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor:  # needs gradients: no no_grad here
        with torch.enable_grad():
            return self.explain(image)[:, None]


class _LogitsOnly(nn.Module):
    def __init__(self, net: nn.Module, norm: nn.Module):
        super().__init__()
        self.net, self.norm = net, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class ClassifierObjective(nn.Module):
    """Cross-entropy on single-class samples (multi-label BCE when ``multilabel``)."""

    def __init__(self, multilabel: bool = False):
        super().__init__()
        self.multilabel = multilabel

    def forward(self, model: CAMBaseline, batch: Batch) -> LossOutput:
        logits = model(batch["image"])["logits"]
        if self.multilabel:
            labels = batch["labels"].to(logits.dtype)
            known = ~torch.isnan(labels)
            loss = F.binary_cross_entropy_with_logits(logits[known], labels[known])
            return LossOutput(loss, {"ce": float(loss.detach())}, scores=torch.sigmoid(logits.detach()))
        else:
            y = batch["class_index"]
            known = y >= 0
            loss = F.cross_entropy(logits[known], y[known]) if bool(known.any()) else logits.sum() * 0
        return LossOutput(loss, {"ce": float(loss.detach())}, scores=torch.softmax(logits.detach(), 1))
