"""SAMed (Zhang & Liu 2023) rebuilt on the ``segment-anything`` package.

* SAM's image encoder is frozen; every block's fused ``qkv`` projection gets a low-rank update on its
  q and v parts only (:class:`LoRAQKV`: ``q += B_q A_q x``, ``v += B_v A_v x``, no scaling, no bias, no
  dropout; ``A`` Kaiming-uniform with ``a = sqrt(5)``, ``B`` zero so the model starts as plain SAM).
* The prompt encoder and the mask decoder are trainable. The decoder is built with
  ``num_multimask_outputs = num_classes`` and all ``num_classes + 1`` mask tokens are used, one per
  class (token 0 = background); no prompt is given (the prompt encoder called with nothing).
* Input ``image_size`` px (512 for ViT-B), images scaled to [0, 1] with grey repeated to 3 channels
  (pixel mean 0, std 1); the decoder returns low-resolution logits of ``image_size / 4`` px.

:func:`build_samed` builds the model from a :class:`SamedConfig` (presets ``vit_b`` and ``tiny``);
:func:`adapt_sam_state_dict` turns an official 1024 px SAM checkpoint into one for this model.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gazeprep._atomic import atomic_write, atomic_write_text
from gazeprep._torchvision_compat import ensure_torchvision
from gazeprep.anatomy.structures import CLASSES
from gazeprep.errors import GazeprepError, StorageError

ensure_torchvision()
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)


@dataclass(frozen=True)
class SamedConfig:
    """Architecture of a SAMed model (JSON round-trip with :meth:`to_json` / :meth:`from_json`).

    ``image_size`` and ``patch_size`` fix the embedding grid (``image_size / patch_size``); the
    low-resolution logits have ``4 * image_size / patch_size`` px per side.
    """

    name: str = "vit_b"
    image_size: int = 512
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    lora_rank: int = 4
    classes: tuple[str, ...] = CLASSES  # channel 0 = background
    pretrained_image_size: int = 1024  # size of the official checkpoints (for the resize on load)

    @property
    def num_classes(self) -> int:
        """Foreground classes (background excluded)."""
        return len(self.classes) - 1

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SamedConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise GazeprepError(f"unknown SAMed config keys {sorted(unknown)}")
        data = dict(data)
        for k in ("encoder_global_attn_indexes", "classes"):
            if k in data:
                data[k] = tuple(data[k])
        return cls(**data)


PRESETS: dict[str, SamedConfig] = {
    # the official SAM ViT-B encoder at SAMed's 512 px input
    "vit_b": SamedConfig(),
    "vit_l": SamedConfig(
        name="vit_l",
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamedConfig(
        name="vit_h",
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    # a small random-init SAM of the same classes: trains on CPU in seconds (tests, smoke runs)
    "tiny": SamedConfig(
        name="tiny",
        image_size=64,
        patch_size=8,
        encoder_embed_dim=48,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        window_size=4,
        prompt_embed_dim=32,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
        pretrained_image_size=64,
    ),
}


def preset(name: str, **overrides: Any) -> SamedConfig:
    """A named configuration (``vit_b``, ``vit_l``, ``vit_h``, ``tiny``) with fields replaced."""
    if name not in PRESETS:
        raise GazeprepError(f"unknown SAMed config {name!r} (known: {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


class LoRAQKV(nn.Linear):
    """A fused ``qkv`` projection (``dim -> 3 dim``) with rank-``r`` LoRA on its q and v thirds.

    The frozen base weights keep the official names (``weight``, ``bias``) so a SAM checkpoint
    loads unchanged; the LoRA factors are ``lora_a_q``, ``lora_b_q``, ``lora_a_v``, ``lora_b_v``.
    Output: ``[q + B_q A_q x, k, v + B_v A_v x]``.
    """

    def __init__(self, dim: int, rank: int, bias: bool = True):
        super().__init__(dim, 3 * dim, bias=bias)
        if rank < 1:
            raise GazeprepError(f"LoRA rank must be >= 1, got {rank}")
        self.dim = dim
        self.rank = rank
        self.lora_a_q = nn.Linear(dim, rank, bias=False)
        self.lora_b_q = nn.Linear(rank, dim, bias=False)
        self.lora_a_v = nn.Linear(dim, rank, bias=False)
        self.lora_b_v = nn.Linear(rank, dim, bias=False)
        self.reset_lora()

    @classmethod
    def from_linear(cls, base: nn.Linear, rank: int) -> LoRAQKV:
        """Wrap an existing ``qkv`` Linear, sharing its weight and bias tensors."""
        dim = base.in_features
        if base.out_features != 3 * dim:
            raise GazeprepError(f"qkv projection must map {dim} -> {3 * dim}, got {base.out_features}")
        m = cls(dim, rank, bias=base.bias is not None)
        m.weight = base.weight
        if base.bias is not None:
            m.bias = base.bias
        return m.to(base.weight.device)

    def reset_lora(self) -> None:
        """A: Kaiming-uniform (a = sqrt(5)); B: zeros (the update starts at exactly 0)."""
        for a in (self.lora_a_q, self.lora_a_v):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        for b in (self.lora_b_q, self.lora_b_v):
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(x, self.weight, self.bias)
        q, k, v = qkv.split(self.dim, dim=-1)
        q = q + self.lora_b_q(self.lora_a_q(x))
        v = v + self.lora_b_v(self.lora_a_v(x))
        return torch.cat([q, k, v], dim=-1)


def build_sam(config: SamedConfig) -> Sam:
    """A plain SAM (random init) of ``config``'s architecture, with a ``num_classes``-token decoder."""
    emb = config.embedding_size
    if config.image_size % config.patch_size:
        raise GazeprepError("image_size must be a multiple of patch_size")
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(config.encoder_global_attn_indexes),
            window_size=config.window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_classes,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        # images arrive scaled to [0, 1]: no further normalisation (SAMed)
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    )


class Samed(nn.Module):
    """SAM + LoRA for multi-class segmentation without prompts.

    ``forward(images)``: ``images`` float (B, 3, S, S) in [0, 1] with S = ``config.image_size``;
    returns logits (B, num_classes + 1, L, L) at the decoder's low resolution
    L = ``config.low_res_size`` = 4 S / patch_size (128 for S = 512, patch 16); channel 0 = background.
    """

    def __init__(self, config: SamedConfig, sam: Sam | None = None):
        super().__init__()
        self.config = config
        self.sam = sam if sam is not None else build_sam(config)
        for blk in self.sam.image_encoder.blocks:
            blk.attn.qkv = LoRAQKV.from_linear(blk.attn.qkv, config.lora_rank)
        self.freeze_encoder()

    def freeze_encoder(self) -> None:
        """Image encoder frozen except the LoRA factors; prompt encoder and decoder trainable."""
        for name, p in self.sam.image_encoder.named_parameters():
            p.requires_grad = ".lora_" in name
        for p in self.sam.prompt_encoder.parameters():
            p.requires_grad = True
        for p in self.sam.mask_decoder.parameters():
            p.requires_grad = True

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.sam.image_encoder.named_parameters() if ".lora_" in n}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        sam = self.sam
        x = (images - sam.pixel_mean) / sam.pixel_std
        embeddings = sam.image_encoder(x)
        # no prompts: sparse (1, 0, C) and dense (1, C, h, w) embeddings broadcast against the batch
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        logits, _iou = sam.mask_decoder.predict_masks(
            image_embeddings=embeddings,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return logits


def build_samed(config: SamedConfig, checkpoint: str | Path | None = None) -> Samed:
    """Build SAMed; with ``checkpoint`` (an official SAM ``.pth`` of the same encoder size at any
    resolution) its weights are adapted by :func:`adapt_sam_state_dict` and loaded first."""
    sam = build_sam(config)
    if checkpoint is not None:
        state = load_state_dict_file(checkpoint)
        adapted = adapt_sam_state_dict(state, config)
        try:
            missing, unexpected = sam.load_state_dict(adapted, strict=False)
        except RuntimeError as exc:  # tensor shape mismatch: another encoder size
            first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
            raise GazeprepError(f"{checkpoint}: not a SAM {config.name} checkpoint ({first[:200]})") from None
        allowed_missing = (
            "mask_decoder.mask_tokens",
            "mask_decoder.output_hypernetworks_mlps",
            "mask_decoder.iou_prediction_head",
        )
        bad_missing = [k for k in missing if not k.startswith(allowed_missing)]
        if bad_missing or unexpected:
            raise GazeprepError(
                f"{checkpoint}: not a SAM {config.name} checkpoint "
                f"(missing {bad_missing[:3]}, unexpected {list(unexpected)[:3]})"
            )
    return Samed(config, sam)


#: What ``torch.load(weights_only=True)`` raises on a file that is not a (sound) torch checkpoint,
#: as observed by loading truncated, bit-flipped and random files with torch 2.13 (zip and legacy
#: formats): the weights-only unpickler's refusal, the zip reader's RuntimeError, and the errors of
#: a corrupt pickle stream. Anything else (an ImportError, an AttributeError) is a bug, not a bad file.
TORCH_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AssertionError,
    struct.error,
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` with a one-line error for a missing/bad file."""
    p = Path(path)
    if not p.is_file():
        raise GazeprepError(f"checkpoint {str(p)!r} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise StorageError.from_os_error(exc, p) from exc
    except TORCH_LOAD_ERRORS as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")  # torch's are paragraphs
        raise GazeprepError(f"{p}: cannot read as a torch state dict ({type(exc).__name__}: {first})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise GazeprepError(f"{p}: expected a state dict")
    return state


CLASS_DEPENDENT_KEYS = (
    "mask_decoder.mask_tokens",
    "mask_decoder.output_hypernetworks_mlps",
    "mask_decoder.iou_prediction_head",
)


def resize_pos_embed(pos_embed: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly resize SAM's absolute position embedding (1, H, W, C) to (1, size, size, C)."""
    if pos_embed.shape[1] == size and pos_embed.shape[2] == size:
        return pos_embed
    x = pos_embed.permute(0, 3, 1, 2)
    x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resize a relative position table (L, C) to (length, C) (as SAM's ``get_rel_pos``)."""
    if rel_pos.shape[0] == length:
        return rel_pos
    x = rel_pos.float().t().unsqueeze(0)  # (1, C, L)
    x = F.interpolate(x, size=length, mode="linear", align_corners=False)
    return x[0].t().to(rel_pos.dtype).contiguous()


def adapt_sam_state_dict(state: dict[str, torch.Tensor], config: SamedConfig) -> dict[str, torch.Tensor]:
    """An official SAM state dict adapted to ``config``.

    * drops the class-count-dependent decoder keys (:data:`CLASS_DEPENDENT_KEYS`);
    * resizes ``image_encoder.pos_embed`` from the checkpoint's grid (64 x 64 at 1024 px) to
      ``config.embedding_size`` (32 at 512 px), bilinear;
    * resizes ``rel_pos_h`` / ``rel_pos_w`` of the global-attention blocks (selected by block index,
      ``config.encoder_global_attn_indexes``) to ``2 * embedding_size - 1`` (63); windowed blocks keep
      ``2 * window_size - 1`` (27).
    """
    out: dict[str, torch.Tensor] = {}
    emb = config.embedding_size
    global_blocks = set(config.encoder_global_attn_indexes)
    for key, value in state.items():
        if key.startswith(CLASS_DEPENDENT_KEYS):
            continue
        if key == "image_encoder.pos_embed":
            value = resize_pos_embed(value, emb)
        else:
            parts = key.split(".")
            if (
                len(parts) == 5
                and parts[0] == "image_encoder"
                and parts[1] == "blocks"
                and parts[3] == "attn"
                and parts[4] in ("rel_pos_h", "rel_pos_w")
            ):
                idx = int(parts[2])
                length = 2 * emb - 1 if idx in global_blocks else 2 * config.window_size - 1
                value = resize_rel_pos(value, length)
        out[key] = value
    return out


# --------------------------------------------------------------------------- model folders

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "samed.pt"


def save_model(model: Samed, model_dir: str | Path, extra: dict | None = None) -> Path:
    """Write ``config.json`` and ``samed.pt`` (the full state dict, frozen base included, so the
    folder is self-contained) atomically into ``model_dir``."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    # serialised in memory first: torch.save reports a write fault (disk full) as a RuntimeError,
    # the atomic writer as a StorageError naming the file
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write(d / WEIGHTS_FILE, buf.getbuffer())
    meta = {"config": model.config.to_json(), **(extra or {})}
    atomic_write_text(d / CONFIG_FILE, json.dumps(meta, indent=2, sort_keys=True))
    return d


def load_model(model_dir: str | Path) -> Samed:
    """Load a model written by :func:`save_model` (``torch.load(weights_only=True)``)."""
    d = Path(model_dir)
    cfg_path = d / CONFIG_FILE
    if not cfg_path.is_file():
        raise GazeprepError(f"{d}: not a gazeprep anatomy model folder (no {CONFIG_FILE})")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        config = SamedConfig.from_json(meta["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GazeprepError(f"{cfg_path}: invalid model config ({exc})") from None
    model = Samed(config)
    state = load_state_dict_file(d / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise GazeprepError(f"{d / WEIGHTS_FILE}: weights do not match {cfg_path} ({str(exc)[:200]})") from None
    return model


def model_config_of(model_dir: str | Path) -> dict:
    """The JSON metadata of a model folder (config plus training notes)."""
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text(encoding="utf-8"))


__all__ = [
    "SamedConfig",
    "PRESETS",
    "preset",
    "LoRAQKV",
    "Samed",
    "build_sam",
    "build_samed",
    "adapt_sam_state_dict",
    "resize_pos_embed",
    "resize_rel_pos",
    "save_model",
    "load_model",
    "load_state_dict_file",
    "model_config_of",
]
