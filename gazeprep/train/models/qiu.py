"""Dual-encoder Res-SE-UNet with multi-stage cooperative learning (paper 001, Qiu, chapter 4).

* DenseNet-201 feature encoder (4.3.1): "all layers of the DenseNet-201 before the last dense block"
  (torchvision ``features`` up to ``transition3``, stride 32). Stage ``pretrain``: contrastive
  triplet loss on its pooled features; stage ``classify``: cross-entropy through a linear head.
* Res-SE-UNet (4.3.2): a U-Net whose encoder blocks are residual blocks with squeeze-and-excitation;
  the frozen DenseNet feature is resized to the bottleneck and concatenated with it at the start of
  the decoding path. Stage ``saliency``: KL divergence between the gaze map and the softmax over pixels
  of the one-channel output (DenseNet frozen).
* Multi-scale feature-fusion classifier (4.3.3): the DenseNet feature concatenated with the last
  upsampling feature of the UNet (pooled to the DenseNet grid), a small CNN, cross-entropy. Stage
  ``fusion``: only the classifier trains.

Widths: ``width`` is the first UNet level (doubling per level); ``densenet='densenet201'`` is the
paper's encoder (growth 32, blocks 6-12-48-32), ``'tiny'`` a 4-block, growth-8 DenseNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.losses import saliency_kl, triplet_loss
from gazeprep.train.models.base import GazeModel, LossOutput, load_weights


class SEBlock(nn.Module):
    """Squeeze-and-excitation channel gate (Hu et al. 2018)."""

    def __init__(self, ch: int, reduction: int = 8):
        super().__init__()
        hid = max(ch // reduction, 4)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, hid, 1), nn.ReLU(inplace=True), nn.Conv2d(hid, ch, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x)


class ResSEBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, SE gate, residual (1x1 projection when widths differ), ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), SEBlock(cout),
        )
        self.skip = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DenseNetEncoder(nn.Module):
    """DenseNet features up to the block before the last dense block, plus the stage-1 heads."""

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
            legacy = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
            load_weights(net, weights, key_map=lambda k: legacy.sub(r"\1\2", k))
        names = [n for n, _ in net.features.named_children()]
        cut = names.index("denseblock4")
        self.features = nn.Sequential(*[m for n, m in net.features.named_children()][:cut])
        self.features.eval()  # probe the width without touching batch-norm statistics
        with torch.no_grad():
            self.out_channels = int(self.features(torch.zeros(1, 3, 64, 64)).shape[1])
        self.features.train()
        self.classifier = nn.Linear(self.out_channels, num_classes)
        self.embed = nn.Linear(self.out_channels, embed_dim)

    def forward(self, x):
        return self.features(x)


class QiuDualUNet(GazeModel):
    """Res-SE-UNet + DenseNet encoder + fusion classifier, trained in stages (see module docstring)."""

    stage_names = ("pretrain", "classify", "saliency", "fusion")

    def __init__(self, class_names=("normal", "chf", "pneumonia"), densenet: str = "densenet201", width: int = 32, levels: int = 4, densenet_weights: str | None = None):
        super().__init__()
        self.class_names = list(class_names)
        self.map_names = ["full"]
        c = len(self.class_names)
        self.densenet = DenseNetEncoder(densenet, c, densenet_weights)
        widths = [width * 2**i for i in range(levels + 1)]
        self.enc = nn.ModuleList([ResSEBlock(3 if i == 0 else widths[i - 1], widths[i]) for i in range(levels + 1)])
        dn = self.densenet.out_channels
        self.bridge = nn.Sequential(nn.Conv2d(widths[-1] + dn, widths[-1], 1, bias=False), nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True))
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(levels))])
        self.dec = nn.ModuleList([_conv_block(2 * widths[i], widths[i]) for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.unet = nn.ModuleList([self.enc, self.bridge, self.up, self.dec, self.head])
        self.fusion = nn.Sequential(nn.Conv2d(dn + widths[0], 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, c))
        self.set_stage(self.stage_names[0])

    def trainable_modules(self, stage: str) -> list[nn.Module]:
        return {"pretrain": [self.densenet], "classify": [self.densenet], "saliency": [self.unet], "fusion": [self.fusion]}[stage]

    def _unet(self, x, dn_feat):
        skips = []
        h = x
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        h = skips.pop()
        h = self.bridge(torch.cat([h, F.interpolate(dn_feat, size=h.shape[-2:], mode="bilinear", align_corners=False)], 1))
        for up, dec in zip(self.up, self.dec):
            h = up(h)
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = dec(torch.cat([h, s], 1))
        return self.head(h)[:, 0], h

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        dn = self.densenet(image)
        pooled = dn.mean((2, 3))
        out = {"dn_logits": self.densenet.classifier(pooled), "embedding": F.normalize(self.densenet.embed(pooled), dim=1)}
        if self.stage in ("saliency", "fusion") or not self.training:
            sal, last = self._unet(image, dn)
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

    def forward(self, model: QiuDualUNet, batch: dict) -> LossOutput:
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
            return LossOutput(loss, {"ce": float(loss.detach())})
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
