"""I-AI: anatomy-driven adapter heatmap predictor and masked-image classifier (paper 000, Pham et al.).

* Frozen CLIP-style encoder (section 3.2): BiomedCLIP (open_clip ``CustomTextCLIP``: timm ViT-B/16
  vision trunk, BERT text tower) built from a local folder with ``local-dir:`` (the released
  ``open_clip_config.json`` and weights; nothing is downloaded), or a *tiny* random-init variant for
  tests: a timm ``vit_tiny_patch16_224`` trunk and a 2-layer, 64-wide text transformer (open_clip's own
  text tower, so the tiny variant does not need ``transformers``). Visual features are taken at the
  stem and after blocks 3, 6 and 9; the text embedding of the target's anatomical prompt
  ("the heart", "left lung", ...) is the final embedding.
* Anatomic-Driven Adapter: a ViT over 16 x 16 patches of the same image, whose patch tokens are
  concatenated with a learnable scaling-vector token ``alpha``. Fusion blocks (eq. 1:
  ``f_a' = f_a + conv(f_v) resized + Linear(f_t)``) join the adapter's layers {stem, 1, 2, 3} with the
  encoder's {stem, 3, 6, 9}.
* Intensity decoder (Figure 3a): two 3-layer MLPs (hidden 256) on the patch tokens and on ``alpha``; their
  matrix product gives a small logit map, resized to the image.
* Heatmap loss (eqs. 2-4): L2 on logits + BCE + Dice (``iai_heatmap_loss``). Stage ``heatmap``.
* Classifier (section 3.2, "Classifier"): the image multiplied by the predicted heatmap, encoded by the
  frozen visual encoder ("Visual Intense Encoder" = the BiomedCLIP visual encoder, frozen in both stages
  per section 3.3), a linear layer, softmax / cross-entropy. Stage ``classifier`` trains only that
  linear layer. ``IAIObjective(classifier_mask="target")`` masks with the ground-truth gaze map instead
  (the paper's Table 8 ablation, "predicted gaze map versus ground truth gaze map").

Tiny preset and the classifier: the frozen *random* tiny encoder does carry the class signal of the
masked image (a closed-form ridge probe on its standardised embeddings classifies held-out synthetic
images above chance), but its embeddings differ between gaze-masked images by only ~4 % of their
norm, so a plain linear layer trained for a few dozen Adam steps barely moves off chance (measured:
training accuracy 1/3 before and after 6 epochs, cross-entropy 1.12 -> 1.10). The tiny preset
therefore sets ``classifier_norm=True``: a parameter-free batch norm (no affine, as in MAE's linear
probing) standardises the frozen embedding before the linear layer. The trained part is still only
the linear layer and, in eval mode, the norm is a fixed affine map that folds into it, so the
classifier stays "frozen encoder + linear + softmax". The paper's preset keeps the plain linear layer.
The tiny encoder also mean-pools its patch tokens (see :func:`tiny_clip_config`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.train.losses import iai_heatmap_loss
from gazeprep.train.models.base import Batch, GazeModel, LossOutput

#: BiomedCLIP / OpenAI CLIP preprocessing (ML_NOTES).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Default anatomical prompts per target (paper 000 uses 'the heart', 'left lung', 'right lung').
DEFAULT_PROMPTS = {
    "heart": "the heart",
    "cardiomegaly": "the heart",
    "left_lung": "left lung",
    "right_lung": "right lung",
    "full": "the chest",
    "mediastinum": "the mediastinum",
}


def tiny_clip_config(image_size: int = 64) -> dict:
    """open_clip config of the tiny random-init stand-in for BiomedCLIP.

    Unlike BiomedCLIP (class-token pooling, ``timm_pool: ""``), the tiny image embedding mean-pools the
    patch tokens (``timm_pool: "avg"``): in a *random* ViT the class token has not learnt to gather the
    image, and its embedding carries less of the masked image's content (measured on the synthetic
    classes, gaze-map masks, frozen encoder + normalised linear layer, 3 seeds x 2 training-set sizes:
    mean held-out accuracy 0.58 with the class token against 0.69 mean-pooled, chance 0.33). The
    heatmap branch uses the patch tokens of the trunk's blocks and is unaffected.
    """
    return {
        "model_cfg": {
            "embed_dim": 32,
            "custom_text": True,
            "vision_cfg": {
                "timm_model_name": "vit_tiny_patch16_224",
                "timm_model_pretrained": False,
                "timm_pool": "avg",
                "timm_proj": "linear",
                "image_size": image_size,
            },
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
    }


def build_clip(kind: str = "tiny", clip_dir: str | Path | None = None, image_size: int = 224) -> tuple[Any, Any]:
    """(model, tokenizer) of the frozen encoder: an open_clip ``CLIP``/``CustomTextCLIP`` module and
    its tokenizer (``tokenizer(list[str]) -> LongTensor``). ``Any``: open_clip ships no type
    information, and the code reaches into its timm trunk (``visual.trunk.blocks``, ...).

    ``kind='biomedclip'``: open_clip ``local-dir:`` on ``clip_dir`` (must hold ``open_clip_config.json``;
    the weight file there, if any, is loaded by open_clip; the BERT text tower needs ``transformers``).
    ``kind='tiny'``: the config of :func:`tiny_clip_config` written to a temporary folder.
    """
    from gazeprep._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    import logging

    import open_clip

    if kind == "biomedclip":
        if not clip_dir or not (Path(clip_dir) / "open_clip_config.json").is_file():
            raise GazeprepError(
                f"BiomedCLIP needs model.clip_dir: a local folder with open_clip_config.json (got {clip_dir!r}); gazeprep never downloads it"
            )
        name = f"local-dir:{clip_dir}"
        try:
            # the CLIP weight file in the folder, if any, holds both towers: never fetch BERT weights
            model = open_clip.create_model(name, pretrained_text=False)
        except (ImportError, RuntimeError) as exc:
            if "transformers" not in str(exc):
                raise
            raise GazeprepError(
                f"BiomedCLIP's BERT text tower needs the 'transformers' package (pip install transformers): {exc}"
            ) from None
        tokenizer = open_clip.get_tokenizer(name)
    elif kind == "tiny":
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "open_clip_config.json").write_text(json.dumps(tiny_clip_config(image_size)))
            logging.getLogger().disabled, was = True, logging.getLogger().disabled
            try:
                model = open_clip.create_model(f"local-dir:{d}", pretrained=None)
                tokenizer = open_clip.get_tokenizer(f"local-dir:{d}")
            finally:
                logging.getLogger().disabled = was
    else:
        raise GazeprepError(f"unknown clip kind {kind!r}; use biomedclip or tiny")
    trunk = model.visual.trunk
    if tuple(trunk.patch_embed.img_size) != (image_size, image_size):
        trunk.set_input_size(img_size=(image_size, image_size))
    return model, tokenizer


def _mlp(din: int, hidden: int, dout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dout)
    )


class FusionBlock(nn.Module):
    """Eq. 1: ``f_a' = f_a + resize(conv1x1(f_v)) + Linear(f_t)`` (broadcast over tokens)."""

    def __init__(self, clip_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.proj_v = nn.Conv2d(clip_dim, dim, 1)
        self.proj_t = nn.Linear(text_dim, dim)

    def forward(self, fa: torch.Tensor, fv: torch.Tensor, ft: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        v = F.interpolate(self.proj_v(fv), size=grid, mode="bilinear", align_corners=False)
        return fa + v.flatten(2).transpose(1, 2) + self.proj_t(ft)[:, None, :]


class IAIModel(GazeModel):
    """Adapter heatmap predictor + masked classifier on a frozen CLIP encoder.

    Parameters
    ----------
    class_names: classifier classes; map_names: heatmap targets (one prompt each).
    clip: ``biomedclip`` (needs ``clip_dir``) or ``tiny``; image_size: input side (224 for BiomedCLIP).
    adapter_dim/depth/heads: adapter ViT (paper: 240, 8, 6); mlp_hidden: decoder MLP width (256).
    prompts: target -> text prompt (defaults: :data:`DEFAULT_PROMPTS`, else the target name).
    finetune_classifier_encoder: train a copy of the visual encoder in the classifier stage. The paper
        keeps it frozen (default, also in the tiny preset).
    classifier_norm: put a parameter-free ``BatchNorm1d(affine=False, momentum=None)`` on the frozen
        embedding before the linear layer (linear-probe standardisation; see the module docstring). Its
        running statistics are the cumulative average over every training batch, which is exact here
        because the encoder in front of it is frozen (no batch-norm recalibration pass is needed).
        Off in the paper's preset, on in the tiny one.
    """

    stage_names = ("heatmap", "classifier")
    mean: torch.Tensor  # (1, 3, 1, 1) CLIP normalisation buffers
    std: torch.Tensor

    def __init__(
        self,
        class_names: Sequence[str] = ("normal", "chf", "pneumonia"),
        map_names: Sequence[str] = ("full",),
        clip: str = "biomedclip",
        clip_dir: str | None = None,
        image_size: int = 224,
        adapter_dim: int = 240,
        adapter_depth: int = 8,
        adapter_heads: int = 6,
        mlp_hidden: int = 256,
        prompts: dict[str, str] | None = None,
        fuse_clip_layers: Sequence[int] = (3, 6, 9),
        finetune_classifier_encoder: bool = False,
        classifier_norm: bool = False,
    ):
        super().__init__()
        from gazeprep._torchvision_compat import ensure_torchvision

        ensure_torchvision()
        from timm.models.vision_transformer import Block

        self.class_names, self.map_names = list(class_names), list(map_names)
        self.clip, self.tokenizer = build_clip(clip, clip_dir, image_size)
        for p in self.clip.parameters():
            p.requires_grad_(False)
        trunk = self.clip.visual.trunk
        self.fuse_clip_layers = tuple(fuse_clip_layers)
        if max(self.fuse_clip_layers) > len(trunk.blocks):
            raise GazeprepError(
                f"the encoder has {len(trunk.blocks)} blocks; cannot fuse layers {self.fuse_clip_layers}"
            )
        if adapter_depth < len(self.fuse_clip_layers):
            raise GazeprepError("adapter_depth must be at least the number of fused layers")
        clip_dim = trunk.embed_dim
        with torch.no_grad():
            text_dim = int(self.clip.encode_text(self.tokenizer(["x"])).shape[-1])
        self.patch = 16
        self.grid = (image_size // self.patch, image_size // self.patch)
        d = adapter_dim
        self.patch_embed = nn.Conv2d(3, d, self.patch, stride=self.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.alpha = nn.Parameter(torch.zeros(1, 1, d))  # the scaling vector, a learnable token
        nn.init.trunc_normal_(self.alpha, std=0.02)
        self.blocks = nn.ModuleList(
            [Block(d, adapter_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(adapter_depth)]
        )
        self.fusions = nn.ModuleList(
            [FusionBlock(clip_dim, text_dim, d) for _ in range(1 + len(self.fuse_clip_layers))]
        )
        self.norm = nn.LayerNorm(d)
        self.mlp_tokens = _mlp(d, mlp_hidden, mlp_hidden)
        self.mlp_alpha = _mlp(d, mlp_hidden, mlp_hidden)
        with torch.no_grad():
            emb_dim = int(self.clip.encode_image(torch.zeros(1, 3, image_size, image_size)).shape[-1])
        linear = nn.Linear(emb_dim, len(self.class_names))
        self.classifier = (
            nn.Sequential(nn.BatchNorm1d(emb_dim, affine=False, momentum=None), linear) if classifier_norm else linear
        )
        self.intense_encoder = None
        if finetune_classifier_encoder:
            import copy

            self.intense_encoder = copy.deepcopy(self.clip.visual)
            for p in self.intense_encoder.parameters():
                p.requires_grad_(True)
        self.adapter = nn.ModuleList(
            [self.patch_embed, self.blocks, self.fusions, self.norm, self.mlp_tokens, self.mlp_alpha]
        )
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.prompts = {**DEFAULT_PROMPTS, **(prompts or {})}
        self._text_cache: dict[tuple[str, str], torch.Tensor] = {}
        self.set_stage(self.stage_names[0])

    def trainable_modules(self, stage: str) -> list[nn.Module]:
        if stage == "heatmap":
            return [self.adapter, _ParamHolder(self.pos_embed, self.alpha)]
        return [self.classifier] + ([self.intense_encoder] if self.intense_encoder is not None else [])

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self.pos_embed.requires_grad_(stage == "heatmap")
        self.alpha.requires_grad_(stage == "heatmap")
        for p in self.clip.parameters():
            p.requires_grad_(False)

    # -- encoders ---------------------------------------------------------------------------------
    def _text(self, target: str, device: torch.device) -> torch.Tensor:
        prompt = self.prompts.get(target, target.replace("_", " "))
        key = (prompt, str(device))
        if key not in self._text_cache:
            with torch.no_grad():
                self._text_cache[key] = self.clip.encode_text(self.tokenizer([prompt]).to(device))[0].float()
        return self._text_cache[key]

    @torch.no_grad()
    def _clip_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Visual features at the stem and after the fused blocks, as (B, C, h, w)."""
        t = self.clip.visual.trunk
        h = t.norm_pre(t.patch_drop(t._pos_embed(t.patch_embed(x))))
        n_pre = t.num_prefix_tokens
        gh, gw = t.patch_embed.grid_size

        def grid(z: torch.Tensor) -> torch.Tensor:
            return z[:, n_pre:].transpose(1, 2).reshape(z.shape[0], -1, gh, gw)

        feats = [grid(h)]
        for i, blk in enumerate(t.blocks, start=1):
            h = blk(h)
            if i in self.fuse_clip_layers:
                feats.append(grid(h))
            if i >= max(self.fuse_clip_layers):
                break
        return feats

    def heatmap_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Attention logits (B, T, H, W), one map per target prompt."""
        x = (image - self.mean) / self.std
        fv = self._clip_features(x)
        b = x.shape[0]
        outs = []
        for target in self.map_names:
            ft = self._text(target, x.device).expand(b, -1)
            fa = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
            fa = self.fusions[0](fa, fv[0], ft, self.grid)
            tokens = torch.cat([fa, self.alpha.expand(b, -1, -1)], 1)
            for i, blk in enumerate(self.blocks):
                tokens = blk(tokens)
                if i + 1 < len(self.fusions):
                    patch, a = tokens[:, :-1], tokens[:, -1:]
                    tokens = torch.cat([self.fusions[i + 1](patch, fv[i + 1], ft, self.grid), a], 1)
            tokens = self.norm(tokens)
            fa_o, a_o = self.mlp_tokens(tokens[:, :-1]), self.mlp_alpha(tokens[:, -1])
            small = torch.einsum("bnd,bd->bn", fa_o, a_o) / fa_o.shape[-1] ** 0.5
            small = small.view(b, 1, *self.grid)
            outs.append(F.interpolate(small, size=image.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(outs, 1)

    def classify(self, image: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) of ``image`` (B, 3, H, W) in [0, 1] re-weighted by ``heat`` (B, 1, H, W)
        in [0, 1]: ``Linear(encoder(normalise(image * heat)))`` (section 3.2, "Classifier")."""
        masked = (image * heat.detach() - self.mean) / self.std
        if self.intense_encoder is not None:
            emb = self.intense_encoder(masked)
        else:
            with torch.no_grad():
                emb = self.clip.encode_image(masked)
        return self.classifier(emb.float())

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``heatmap_logits`` (B, T, H, W) and, in the classifier stage or eval mode, ``logits`` (B, C)
        of the image masked by the first predicted map, or by ``mask`` (B, 1, H, W) in [0, 1] when
        given (ground-truth masking; the heatmap branch is then skipped in the classifier stage)."""
        out: dict[str, torch.Tensor] = {}
        if mask is None or self.stage != "classifier" or not self.training:
            out["heatmap_logits"] = self.heatmap_logits(image)
        if self.stage == "classifier" or not self.training:
            heat = mask if mask is not None else torch.sigmoid(out["heatmap_logits"][:, :1])
            out["logits"] = self.classify(image, heat)
        return out

    @torch.no_grad()
    def predict_heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.heatmap_logits(image))


class _ParamHolder(nn.Module):
    """Wraps loose parameters so :meth:`GazeModel.set_stage` can list them as a module."""

    def __init__(self, *params: nn.Parameter):
        super().__init__()
        self.params = list(params)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:  # noqa: D102
        return iter(self.params)


class IAIObjective(nn.Module):
    """Stage ``heatmap``: ``l1 L2 + l2 BCE + l3 Dice`` over the targets with a map; stage
    ``classifier``: cross-entropy of the masked-image classifier, logged with its accuracy ``acc``
    (fraction of the labelled images whose arg-max class is right).

    ``classifier_mask``: ``predicted`` (the paper's pipeline: mask with the model's first predicted
    map) or ``target`` (Table 8's ablation: mask with the export's map of the first target; images
    without that map are left out of the classifier loss).
    """

    def __init__(self, lambdas: Sequence[float] = (1.0, 1.0, 1.0), classifier_mask: str = "predicted"):
        super().__init__()
        if len(lambdas) != 3:
            raise GazeprepError(f"loss.lambdas needs three weights (L2, BCE, Dice), got {list(lambdas)}")
        l2, bce, dice = (float(x) for x in lambdas)
        self.lambdas = (l2, bce, dice)
        if classifier_mask not in ("predicted", "target"):
            raise GazeprepError(f"classifier_mask must be 'predicted' or 'target', not {classifier_mask!r}")
        self.classifier_mask = classifier_mask

    def forward(self, model: IAIModel, batch: Batch) -> LossOutput:
        if model.stage == "classifier":
            y = batch["class_index"]
            known = y >= 0
            mask = None
            if self.classifier_mask == "target":
                mask = batch["heatmaps"][:, :1]
                known = known & batch["heatmap_valid"][:, 0]
            logits = model(batch["image"], mask=mask)["logits"]
            if not bool(known.any()):
                return LossOutput(logits.sum() * 0, {})
            loss = F.cross_entropy(logits[known], y[known])
            acc = (logits[known].argmax(1) == y[known]).float().mean()
            return LossOutput(
                loss, {"ce": float(loss.detach()), "acc": float(acc)}, scores=torch.softmax(logits.detach(), 1)
            )
        out = model(batch["image"])
        valid = batch["heatmap_valid"][:, : len(model.map_names)]
        logits = out["heatmap_logits"]
        if not bool(valid.any()):
            return LossOutput(logits.sum() * 0, {})
        target = batch["heatmaps"][:, : len(model.map_names)]
        total, parts = iai_heatmap_loss(logits[valid], target[valid], self.lambdas)
        return LossOutput(total, parts, torch.sigmoid(logits[valid]).detach(), target[valid])
