"""Shared pieces of the papers' models: the model/objective interface and weight loading.

Every model is a :class:`GazeModel` (an ``nn.Module``) and is trained through an *objective*: an
``nn.Module`` called as ``objective(model, batch) -> LossOutput``. The batch is a dict collated from
:class:`gazeprep.train.data.GazeDataset` items. Keeping the loss outside the network lets one model
serve several of a paper's loss variants (e.g. 003's heatmap-loss sets) and lets trainable loss
parameters (002's sigmas) live in the objective and be checkpointed with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeAlias

import torch
from torch import nn

from gazeprep.errors import GazeprepError

#: A collated batch (:func:`gazeprep.train.loop._collate`): tensors with a leading batch dimension
#: (``image``, ``heatmaps``, ``heatmap_valid``, ``labels``, ``class_index``, ``masks``, ...) and plain
#: lists for the fields that are not numbers (``case_id``). Values are read by key with their known
#: types, so the mapping is typed by its keys only.
Batch: TypeAlias = dict[str, Any]


@dataclass
class LossOutput:
    """What an objective returns for one batch.

    ``total``: scalar loss to minimise; ``parts``: named float components for logging;
    ``pred_maps``/``target_maps``: (N, h, w) predicted maps in [0, 1] and their targets at the same
    resolution for the maps the loss supervised (None for classifiers), used for per-epoch metrics;
    ``scores``: (B, C) class scores of every sample of the batch (softmax or sigmoid, in the order of
    the model's ``class_names``), for the AUC / accuracy that select the best epoch.
    """

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
    pred_maps: torch.Tensor | None = None
    target_maps: torch.Tensor | None = None
    scores: torch.Tensor | None = None


#: ImageNet statistics (torchvision / timm pretrained CNNs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMS = ("none", "imagenet", "imagenet_twice", "zscore", "max", "minmax")


class InputNorm(nn.Module):
    """The input normalisation of a paper's code, applied by the model to the dataset's grey images
    in [0, 1] (3 equal channels), so training and ``predict`` always agree.

    * ``none``: unchanged;
    * ``imagenet``: ``(x - mean) / std`` per channel (ImageNet-pretrained CNNs);
    * ``imagenet_twice``: the ImageNet normalisation applied twice, as paper 004's code does (its
      dataset normalises, then the network's ``ClassifierInputs`` normalises again);
    * ``zscore``: per image, ``(x - mean(x)) / std(x)`` over all its pixels (001 ch. 3);
    * ``max``: per image, ``x / max(x)`` (GG-CAM's ``cxr /= cxr.max()``);
    * ``minmax``: per image, ``(x - min) / (max - min)`` (MT-UNet / Qiu).

    Statistics are buffers that are not saved in state dicts (older checkpoints load unchanged).
    """

    mean: torch.Tensor  # (1, 3, 1, 1) buffers
    std: torch.Tensor

    def __init__(self, kind: str = "none"):
        super().__init__()
        if kind not in INPUT_NORMS:
            raise GazeprepError(f"unknown input normalisation {kind!r}; use one of {', '.join(INPUT_NORMS)}")
        self.kind = kind
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "none":
            return x
        if k in ("imagenet", "imagenet_twice"):
            mean, std = self.mean[:, : x.shape[1]], self.std[:, : x.shape[1]]
            x = (x - mean) / std
            return (x - mean) / std if k == "imagenet_twice" else x
        flat = x.flatten(1)
        if k == "zscore":
            mu = flat.mean(1).view(-1, 1, 1, 1)
            sd = flat.std(1).view(-1, 1, 1, 1).clamp(min=1e-6)
            return (x - mu) / sd
        hi = flat.amax(1).view(-1, 1, 1, 1)
        if k == "max":
            return x / hi.clamp(min=1e-6)
        lo = flat.amin(1).view(-1, 1, 1, 1)
        return (x - lo) / (hi - lo).clamp(min=1e-6)


class GazeModel(nn.Module):
    """Base class: a network with named outputs, optional heatmap predictions and training stages.

    Subclasses set ``map_names`` (the channels of :meth:`predict_heatmaps`) and ``class_names``.
    Multi-stage models (001, 000) list their stages in ``stage_names``; :meth:`set_stage` freezes what
    that stage does not train (frozen parts stay in eval mode, so their batch-norm statistics do not
    move).
    """

    stage_names: tuple[str, ...] = ("main",)

    def __init__(self) -> None:
        super().__init__()
        self.stage = self.stage_names[0]
        self.map_names: list[str] = []
        self.class_names: list[str] = []
        self._frozen: list[nn.Module] = []

    # -- stages ---------------------------------------------------------------------------------
    def trainable_modules(self, stage: str) -> list[nn.Module]:
        """Modules trained in ``stage`` (default: the whole model)."""
        return [self]

    def set_stage(self, stage: str) -> None:
        """Switch to ``stage``: only :meth:`trainable_modules` keep ``requires_grad``."""
        if stage not in self.stage_names:
            raise GazeprepError(f"{type(self).__name__} has stages {list(self.stage_names)}, not {stage!r}")
        self.stage = stage
        train_mods = self.trainable_modules(stage)
        for p in self.parameters():
            p.requires_grad_(False)
        for m in train_mods:
            for p in m.parameters():
                p.requires_grad_(True)
        trainable_ids = {id(p) for m in train_mods for p in m.parameters()}
        self._frozen = [
            m
            for m in self.children()
            if not any(id(p) in trainable_ids for p in m.parameters()) and any(True for _ in m.parameters())
        ]
        self.train(self.training)

    def train(self, mode: bool = True) -> Self:  # keep frozen parts in eval mode
        super().train(mode)
        for m in getattr(self, "_frozen", []):
            m.eval()
        return self

    # -- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor | None:
        """Predicted maps (B, len(map_names), h, w) in [0, 1], or None for pure classifiers."""
        return None


def load_weights(
    module: nn.Module,
    path: str | Path,
    prefix_strip: tuple[str, ...] = ("module.", "model.", "backbone."),
    key_map: Callable[[str], str] | None = None,
) -> tuple[int, int]:
    """Load a local state dict (``torch.load(..., weights_only=True)``) into ``module``.

    Accepts a bare state dict or one under ``state_dict``/``model``. Keys are matched after stripping
    common prefixes (and ``key_map(key)`` when given); tensors whose shape differs (e.g. an ImageNet
    classifier head) are skipped.
    Raises :class:`GazeprepError` when the file is missing or fewer than half of ``module``'s tensors
    match (wrong architecture). Returns (matched, total).
    """
    p = Path(path)
    if not p.is_file():
        raise GazeprepError(f"{p}: weight file not found (gazeprep never downloads weights; give a local file)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise GazeprepError(f"{p}: not a state dict")
    own = module.state_dict()
    clean: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        kk = key_map(k) if key_map is not None else k
        changed = True
        while changed:
            changed = False
            for pre in prefix_strip:
                if kk.startswith(pre) and kk not in own:
                    kk = kk[len(pre) :]
                    changed = True
        if kk in own and tuple(own[kk].shape) == tuple(v.shape):
            clean[kk] = v
    if len(clean) < 0.5 * len(own):
        raise GazeprepError(
            f"{p}: only {len(clean)} of {len(own)} tensors match {type(module).__name__}; wrong architecture?"
        )
    module.load_state_dict(clean, strict=False)
    return len(clean), len(own)


def timm_model(name: str, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm model with random init (``pretrained=False``), optionally loading local ``weights``;
    ``kwargs`` go to ``timm.create_model`` (typed ``Any`` there: each architecture takes its own)."""
    from gazeprep._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    import timm

    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as exc:  # unknown model name
        raise GazeprepError(f"unknown backbone {name!r}: {exc}") from None
    if weights:
        load_weights(model, weights)
    return model


def timm_num_features(net: nn.Module) -> int:
    """Channels of a timm model's last feature map (its ``num_features`` attribute)."""
    n = net.__dict__.get("num_features")
    if not isinstance(n, int):
        raise GazeprepError(f"{type(net).__name__} is not a timm model with num_features")
    return n


def timm_last_feature_module(net: nn.Module) -> str:
    """Name of the module that outputs a timm classifier's last feature map
    (``feature_info[-1]['module']``), e.g. ``layer4`` of a ResNet."""
    info = net.__dict__.get("feature_info")
    if not isinstance(info, list) or not info or not isinstance(info[-1].get("module"), str):
        raise GazeprepError(f"{type(net).__name__} is not a timm model with feature_info")
    return str(info[-1]["module"])


def timm_feature_channels(net: nn.Module) -> list[int]:
    """Channels of each output of a timm ``features_only`` model (``feature_info.channels()``)."""
    info = net.__dict__.get("feature_info")
    channels = getattr(info, "channels", None)
    if channels is None:
        raise GazeprepError(f"{type(net).__name__} is not a timm features_only model")
    return [int(c) for c in channels()]


def masked_or_none(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
    """Rows of ``x`` where ``keep`` (bool) is true, or None when there are none."""
    return x[keep] if bool(keep.any()) else None
