"""Dual-encoder Res-SE-UNet with multi-stage cooperative learning (paper 001, Qiu, chapter 4).

* DenseNet-201 feature encoder (4.3.1), ImageNet-initialised when weights are given. Stage
  ``pretrain``: contrastive triplet loss on its pooled features; stage ``classify``: cross-entropy
  through a linear head after ``norm5`` (torchvision's DenseNet classifier).
* Res-SE-UNet (4.3.2) as in the code (HealthX-Lab/CXRGazeLearn ``KL/hzhu_MTL_UNet.py``): a U-Net on
  the grey image (1 channel) with five encoder levels of widths ``width * 2^i`` (code: 64 ... 1024),
  each a residual block (conv-BN-ReLU-conv-BN plus a 3x3 convolution shortcut, ReLU) followed by a
  squeeze-and-excitation gate (reduction 16); the frozen DenseNet is hooked at the **output of
  ``denseblock4``** (1920 channels at stride 32), which starts the decoding path: five decoder steps
  (x2 nearest upsampling, conv-BN-ReLU; concat with the encoder level; two conv-BN-ReLU) back to the
  input resolution, then conv-BN-ReLU and a 1x1 convolution. Stage ``saliency``: KL divergence
  between the gaze map and the softmax over pixels of that output (DenseNet frozen).
* Multi-scale feature-fusion classifier (4.3.3): the DenseNet feature concatenated with the last
  decoder feature (pooled to the DenseNet grid), a small CNN, cross-entropy. Stage ``fusion``: only
  the classifier trains.

``densenet='densenet201'`` is the paper's encoder (growth 32, blocks 6-12-48-32), ``'tiny'`` a
4-block, growth-8 DenseNet. Inputs are min-max scaled per image as the code does (``input_norm``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.losses import saliency_kl, triplet_loss
from gazeprep.train.models.base import Batch, GazeModel, InputNorm, LossOutput, load_weights


class SEBlock(nn.Module):
    """Squeeze-and-excitation channel gate (Hu et al. 2018), bias-free as the code's ``SEBlock``."""

    def __init__(self, ch: int, reduction: int = 16):
        super().__init__()
        hid = max(ch // reduction, 1)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(ch, hid, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hid, ch, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)[:, :, None, None]


class ResSEBlock(nn.Module):
    """The code's ``conv_block``: ``ResidualBlock`` (conv-BN-ReLU-conv-BN + 3x3 conv shortcut, ReLU)
    then ``SEBlock``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
        )
        self.skip = nn.Conv2d(cin, cout, 3, padding=1)
        self.se = SEBlock(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(F.relu(self.body(x) + self.skip(x)))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """The code's ``up_conv_block``: two conv-BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    """The code's ``up_conv``: x2 nearest upsampling, conv-BN-ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DenseNetEncoder(nn.Module):
    """DenseNet features through ``denseblock4`` (the code's forward hook), plus the stage-1 heads on
    ``relu(norm5(.))`` average-pooled (torchvision's classifier path)."""

    def __init__(self, variant: str, num_classes: int, weights: str | None = None, embed_dim: int = 128):
        super().__init__()
        from gazeprep._torchvision_compat import ensure_torchvision

        ensure_torchvision()
        from torchvision.models import DenseNet, densenet201

        if variant == "densenet201":
            net = densenet201(weights=None)
        elif variant == "tiny":
            net = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16)
        else:
            raise GazeprepError(f"unknown densenet variant {variant!r}; use densenet201 or tiny")
        if weights:
            import re

            # torchvision's published DenseNet files use the legacy names "norm.1", "conv.2", ...
            legacy = re.compile(
                r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
            )
            load_weights(net, weights, key_map=lambda k: legacy.sub(r"\1\2", k))
        children = list(net.features.named_children())
        names = [n for n, _ in children]
        cut = names.index("denseblock4") + 1
        self.features = nn.Sequential(*[m for _, m in children[:cut]])
        self.norm5 = net.features.norm5
        self.out_channels = int(self.norm5.num_features)
        self.classifier = nn.Linear(self.out_channels, num_classes)
        self.embed = nn.Linear(self.out_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def pooled(self, feat: torch.Tensor) -> torch.Tensor:
        """``relu(norm5(feat))`` averaged over space: (B, C)."""
        return F.relu(self.norm5(feat)).mean((2, 3))


class QiuDualUNet(GazeModel):
    """Res-SE-UNet + DenseNet encoder + fusion classifier, trained in stages (see module docstring).

    Parameters
    ----------
    class_names: classes; densenet: ``densenet201`` or ``tiny``; width: first U-Net width (code 64);
    levels: encoder levels after the first (4: five levels, as the code); densenet_weights: local
    state dict (ImageNet or the code's classification-finetuned DenseNet); input_norm: see
    :class:`~gazeprep.train.models.base.InputNorm` (code: ``minmax``).
    """

    stage_names = ("pretrain", "classify", "saliency", "fusion")

    def __init__(
        self,
        class_names: Sequence[str] = ("normal", "chf", "pneumonia"),
        densenet: str = "densenet201",
        width: int = 64,
        levels: int = 4,
        densenet_weights: str | None = None,
        input_norm: str = "minmax",
    ):
        super().__init__()
        self.class_names = list(class_names)
        self.map_names = ["full"]
        c = len(self.class_names)
        self.input_norm = InputNorm(input_norm)
        self.densenet = DenseNetEncoder(densenet, c, densenet_weights)
        widths = [width * 2**i for i in range(levels + 1)]
        self.enc = nn.ModuleList([ResSEBlock(1 if i == 0 else widths[i - 1], widths[i]) for i in range(levels + 1)])
        dn = self.densenet.out_channels
        # decoder step i (from the deepest): upsample the previous output, concat encoder level i
        ups, decs = [], []
        prev = dn
        for i in reversed(range(levels + 1)):
            out = widths[max(i - 1, 0)]
            ups.append(_up(prev, out))
            decs.append(_conv_block(widths[i] + out, out))
            prev = out
        self.up = nn.ModuleList(ups)
        self.dec = nn.ModuleList(decs)
        self.head = nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.Conv2d(widths[0], 1, 1),
        )
        self.unet = nn.ModuleList([self.enc, self.up, self.dec, self.head])
        self.fusion = nn.Sequential(
            nn.Conv2d(dn + widths[0], 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, c),
        )
        self.set_stage(self.stage_names[0])

    def trainable_modules(self, stage: str) -> list[nn.Module]:
        table: dict[str, list[nn.Module]] = {
            "pretrain": [self.densenet],
            "classify": [self.densenet],
            "saliency": [self.unet],
            "fusion": [self.fusion],
        }
        return table[stage]

    def _unet(self, x: torch.Tensor, dn_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Saliency logits (B, H, W) and the last decoder features (B, width, H, W) of the U-Net on
        ``x`` (B, 3, H, W), decoding from the DenseNet features ``dn_feat``."""
        skips: list[torch.Tensor] = []
        h = x[:, :1]  # the code's U-Net reads the grey image (the DenseNet gets it repeated to 3 channels)
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        h = dn_feat
        for up, dec in zip(self.up, self.dec):
            h = up(h)
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = dec(torch.cat([s, h], 1))
        return self.head(h)[:, 0], h

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.input_norm(image)
        dn = self.densenet(x)
        pooled = self.densenet.pooled(dn)
        out = {
            "dn_logits": self.densenet.classifier(pooled),
            "embedding": F.normalize(self.densenet.embed(pooled), dim=1),
        }
        if self.stage in ("saliency", "fusion") or not self.training:
            sal, last = self._unet(x, dn)
            out["saliency_logits"] = sal
            fused = torch.cat([dn, F.adaptive_avg_pool2d(last, dn.shape[-2:])], 1)
            out["logits"] = self.fusion(fused)
        else:
            out["logits"] = out["dn_logits"]
        return out

    @torch.no_grad()
    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """Pixel softmax of the saliency output, divided by its max: (B, 1, H, W) in [0, 1]."""
        s = self.forward(image)["saliency_logits"]
        p = torch.softmax(s.flatten(1), 1).view_as(s)
        return (p / p.flatten(1).amax(1).clamp(min=1e-12)[:, None, None])[:, None]


class QiuObjective(nn.Module):
    """Per-stage loss: triplet (pretrain), CE (classify, fusion), KL (saliency)."""

    def __init__(self, margin: float = 1.0, target_channel: int = 0):
        super().__init__()
        self.margin, self.target_channel = margin, target_channel

    def forward(self, model: QiuDualUNet, batch: Batch) -> LossOutput:
        out = model(batch["image"])
        y = batch["class_index"]
        known = y >= 0
        stage = model.stage
        if stage == "pretrain":
            loss = triplet_loss(out["embedding"][known], y[known], self.margin)
            return LossOutput(loss, {"triplet": float(loss.detach())})
        if stage in ("classify", "fusion"):
            key = "dn_logits" if stage == "classify" else "logits"
            loss = F.cross_entropy(out[key][known], y[known]) if bool(known.any()) else out[key].sum() * 0
            return LossOutput(loss, {"ce": float(loss.detach())}, scores=torch.softmax(out[key].detach(), 1))
        valid = batch["heatmap_valid"][:, self.target_channel]
        sal = out["saliency_logits"]
        if not bool(valid.any()):
            return LossOutput(sal.sum() * 0, {"kl": 0.0})
        target = batch["heatmaps"][:, self.target_channel][valid]
        loss = saliency_kl(sal[valid], target)
        with torch.no_grad():
            p = torch.softmax(sal[valid].flatten(1), 1).view_as(target)
            pred = p / p.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        return LossOutput(loss, {"kl": float(loss.detach())}, pred, target)
