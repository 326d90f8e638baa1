"""SAMed fine-tuning on EGD-CXR masks, held-out evaluation, and batched inference helpers.

Training follows SAMed: loss ``0.2 * CE + 0.8 * soft Dice`` (all classes, background included) on the
low-resolution logits against labels downsampled nearest; AdamW (betas 0.9/0.999, weight decay 0.1,
lr 0.005) with a linear warm-up then a poly decay (power 0.9); random rotation of up to +-20 degrees
with probability 0.5 (no flips: they would swap left and right lung). Inference = argmax over the
logits upsampled bilinearly to the output grid.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from gazeprep._atomic import atomic_write_parquet, atomic_write_text
from gazeprep.anatomy.data import (
    ImageRecord,
    labels_from_masks,
    list_images,
    load_gray,
    load_release_masks,
    release_mask_paths,
    resize_float,
    resize_labels,
    resolve_image,
)
from gazeprep.anatomy.metrics import per_structure_scores
from gazeprep.anatomy.model import Samed, build_samed, preset, save_model
from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError
from gazeprep.schema import reject, rejects_frame

# --------------------------------------------------------------------------- loss and schedule


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over classes of ``1 - (2 sum(p t) + eps) / (sum p^2 + sum t^2 + eps)``, sums over the batch
    and pixels. ``logits`` (B, K, h, w), ``labels`` int64 (B, h, w) in [0, K)."""
    k = logits.shape[1]
    p = logits.softmax(dim=1)
    t = F.one_hot(labels, k).permute(0, 3, 1, 2).to(p.dtype)
    dims = (0, 2, 3)
    inter = (p * t).sum(dims)
    denom = (p * p).sum(dims) + (t * t).sum(dims)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def samed_loss(
    logits: torch.Tensor, labels: torch.Tensor, ce_weight: float = 0.2, dice_weight: float = 0.8
) -> torch.Tensor:
    """``ce_weight * CE + dice_weight * soft Dice`` on low-resolution logits (B, K, h, w) vs labels (B, h, w)."""
    return ce_weight * F.cross_entropy(logits, labels) + dice_weight * soft_dice_loss(logits, labels)


def lr_at(iteration: int, base_lr: float, warmup: int, total: int, power: float = 0.9) -> float:
    """Learning rate at 0-based ``iteration``: ``base * (i + 1) / warmup`` during the warm-up, then
    ``base * (1 - (i - warmup) / (total - warmup)) ** power``."""
    if warmup > 0 and iteration < warmup:
        return base_lr * (iteration + 1) / warmup
    span = max(total - warmup, 1)
    frac = min(max((iteration - warmup) / span, 0.0), 1.0)
    return base_lr * (1.0 - frac) ** power


def downsample_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest downsampling of (B, S, S) labels to (B, size, size), taking pixel centres."""
    s = labels.shape[-1]
    idx = torch.clamp(((torch.arange(size, device=labels.device) + 0.5) * s / size).long(), max=s - 1)
    return labels[:, idx][:, :, idx]


def rotate_batch(
    images: torch.Tensor, labels: torch.Tensor, max_deg: float, generator: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each sample by a uniform angle in [-max_deg, max_deg] with probability ``p``
    (images bilinear, labels nearest, zero padding). images (B, C, S, S), labels (B, S, S)."""
    if max_deg <= 0:
        return images, labels
    b = images.shape[0]
    angles = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_deg)
    angles = torch.where(torch.rand(b, generator=generator) < p, angles, torch.zeros_like(angles))
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    img = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = (
        F.grid_sample(
            labels[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[:, 0]
        .round()
        .long()
    )
    return img, lab


# --------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """Optimisation settings (SAMed defaults)."""

    epochs: int = 20
    batch_size: int = 12
    lr: float = 0.005
    weight_decay: float = 0.1
    warmup_iters: int = 250
    poly_power: float = 0.9
    max_rotation_deg: float = 20.0
    seed: int = 0


def _to_input(gray: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, S, S) float array in [0, 1] -> (B, 3, S, S) float32 tensor (grey repeated)."""
    x = torch.as_tensor(np.asarray(gray, dtype=np.float32), device=device)  # float16 storage -> float32
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def train_samed(
    model: Samed,
    images: np.ndarray,
    labels: np.ndarray,
    settings: TrainSettings,
    device: torch.device,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``model`` in place. ``images`` (N, S, S) float in [0, 1], ``labels`` (N, S, S) uint8
    class indices, S = ``model.config.image_size``. Returns the loss of every iteration.

    The warm-up is shortened to a tenth of the run when the run has fewer than twice
    ``settings.warmup_iters`` iterations (short CPU runs).
    """
    n = len(images)
    if n == 0:
        raise GazeprepError("no training images")
    s = model.config.image_size
    if images.shape[1:] != (s, s) or labels.shape != images.shape:
        raise GazeprepError(f"training arrays must be (N, {s}, {s}); got {images.shape} and {labels.shape}")
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.999), weight_decay=settings.weight_decay)
    bs = min(settings.batch_size, n)
    per_epoch = math.ceil(n / bs)
    total = settings.epochs * per_epoch
    warmup = settings.warmup_iters if total >= 2 * settings.warmup_iters else max(total // 10, 1)
    low = model.config.low_res_size
    losses: list[float] = []
    it = 0
    bar = tqdm(total=total, desc="anatomy train", unit="it", disable=not progress)
    for _epoch in range(settings.epochs):
        order = rng.permutation(n)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            x = _to_input(images[idx], device)
            y = torch.as_tensor(labels[idx].astype(np.int64), device=device)
            x, y = rotate_batch(x, y, settings.max_rotation_deg, gen)
            y_low = downsample_labels(y, low)
            lr = lr_at(it, settings.lr, warmup, total, settings.poly_power)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = samed_loss(model(x), y_low)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            it += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}")
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def predict_logits(model: Samed, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Low-resolution logits (B, K, h, w) of (B, S, S) images in [0, 1]."""
    model.eval()
    return model(_to_input(images, device))


@torch.no_grad()
def logits_to_labels(logits: torch.Tensor, out_size: tuple[int, int]) -> np.ndarray:
    """Argmax over logits upsampled bilinearly to ``out_size`` (H, W): uint8 (B, H, W)."""
    up = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
    return up.argmax(dim=1).to(torch.uint8).cpu().numpy()


# --------------------------------------------------------------------------- training data


def load_training_case(
    record: ImageRecord, release_root: Path, images_root: Path, classes: tuple[str, ...], dataset: str = "egd-cxr"
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (H, W) in [0, 1], labels uint8 at the mask size) of one case of a release that
    ships masks (``dataset``'s adapter finds them; EGD-CXR by default).

    Raises :class:`GazeprepError` when a structure's mask is missing or sizes are inconsistent.
    """
    masks = load_release_masks(dataset, release_root, record.image_id, tuple(c for c in classes[1:]))
    missing = [c for c in classes[1:] if c not in masks]
    if missing:
        raise GazeprepError(f"missing mask(s) {missing}")
    shapes = {m.shape for m in masks.values()}
    if len(shapes) != 1:
        raise GazeprepError(f"masks have different sizes {sorted(shapes)}")
    img = load_gray(resolve_image(images_root, record.image_path))
    return img, labels_from_masks(masks, classes)


def split_by_subject(
    records: list[ImageRecord], val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Subject-disjoint train/held-out split: a seeded permutation of the subjects, the first
    ``round(val_fraction * n_subjects)`` (at least 1 when there are 2+ subjects) held out."""
    subjects = sorted({r.subject_id or r.image_id for r in records})
    rng = np.random.default_rng(seed)
    perm = [subjects[i] for i in rng.permutation(len(subjects))]
    n_val = int(round(val_fraction * len(subjects)))
    if val_fraction > 0 and len(subjects) >= 2:
        n_val = min(max(n_val, 1), len(subjects) - 1)
    held = set(perm[:n_val])
    train = [r for r in records if (r.subject_id or r.image_id) not in held]
    val = [r for r in records if (r.subject_id or r.image_id) in held]
    return train, val


def evaluate(
    model: Samed, cases: Iterable[tuple[np.ndarray, np.ndarray]], device: torch.device, batch_size: int = 8
) -> dict:
    """Dice and IoU per structure over held-out cases at each case's mask resolution.

    ``cases``: an iterable (consumed in batches, so a lazy generator keeps memory bounded) of
    (image float (H, W) in [0, 1] at any size, labels uint8 (H', W') at the mask size) pairs.
    Returns ``{"per_structure": {name: {dice, iou, dice_std, iou_std}}, "mean_dice", "mean_iou",
    "n_cases"}``.
    """
    classes = model.config.classes
    s = model.config.image_size
    scores: dict[str, dict[str, list[float]]] = {c: {"dice": [], "iou": []} for c in classes[1:]}
    n_cases = 0

    def _score(chunk: list[tuple[np.ndarray, np.ndarray]]) -> None:
        x = np.stack([resize_float(img, s) for img, _ in chunk])
        logits = predict_logits(model, x, device)
        for j, (_, truth) in enumerate(chunk):
            pred = logits_to_labels(logits[j : j + 1], truth.shape)[0]
            for name, d in per_structure_scores(pred, truth, classes).items():
                scores[name]["dice"].append(d["dice"])
                scores[name]["iou"].append(d["iou"])

    chunk: list[tuple[np.ndarray, np.ndarray]] = []
    for case in cases:
        chunk.append(case)
        n_cases += 1
        if len(chunk) == batch_size:
            _score(chunk)
            chunk = []
    if chunk:
        _score(chunk)
    per = {
        name: {
            "dice": float(np.mean(v["dice"])) if v["dice"] else float("nan"),
            "iou": float(np.mean(v["iou"])) if v["iou"] else float("nan"),
            "dice_std": float(np.std(v["dice"])) if v["dice"] else float("nan"),
            "iou_std": float(np.std(v["iou"])) if v["iou"] else float("nan"),
        }
        for name, v in scores.items()
    }
    return {
        "per_structure": per,
        "mean_dice": float(np.mean([p["dice"] for p in per.values()])) if n_cases else float("nan"),
        "mean_iou": float(np.mean([p["iou"] for p in per.values()])) if n_cases else float("nan"),
        "n_cases": n_cases,
    }


@dataclass
class _TrainInputs:
    """Where run_train reads its cases, and the rejects rows it collects (stage ``anatomy``)."""

    dataset: str
    root: Path
    images_root: Path
    classes: tuple[str, ...]
    rejects: list[dict]

    def reject(self, rec: ImageRecord, reason: str) -> None:
        self.rejects.append(reject(self.dataset, rec.image_id, "anatomy", rec.source_file, rec.source_row, reason))

    def load(self, rec: ImageRecord) -> tuple[np.ndarray, np.ndarray] | None:
        """:func:`load_training_case`, or None (and a rejects row) when the case cannot be used."""
        try:
            return load_training_case(rec, self.root, self.images_root, self.classes, self.dataset)
        except GazeprepError as exc:
            self.reject(rec, str(exc))
            return None


def _check_start(config: str, checkpoint: str | Path | None) -> None:
    """Refuse a preset that needs the SAM weights without them, or a checkpoint that is not there."""
    if checkpoint is None and config != "tiny":
        raise GazeprepError(f"--config {config} needs --checkpoint SAM.pth (only 'tiny' trains from random init)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise GazeprepError(f"checkpoint {str(checkpoint)!r} not found")


def _usable_cases(inputs: _TrainInputs, limit: int | None) -> list[ImageRecord]:
    """The release's images that have every mask file and an image file (cheap checks: nothing is
    decoded), so that the split is made over usable cases only; the others become rejects."""
    listing = list_images(inputs.dataset, inputs.root)
    inputs.rejects.extend(listing.rejects)
    records = listing.images if limit is None else listing.images[:limit]
    usable: list[ImageRecord] = []
    for rec in records:
        try:
            found = release_mask_paths(inputs.dataset, inputs.root, rec.image_id)
            missing = [c for c in inputs.classes[1:] if c not in found]
            if missing:
                raise GazeprepError(f"missing mask(s) {missing}")
            resolve_image(inputs.images_root, rec.image_path)
        except GazeprepError as exc:
            inputs.reject(rec, str(exc))
            continue
        usable.append(rec)
    if len(usable) < 2:
        raise GazeprepError(
            f"{inputs.root}: fewer than 2 {inputs.dataset} cases with image and all masks "
            f"({len(inputs.rejects)} rejected)"
        )
    return usable


def _training_arrays(
    inputs: _TrainInputs, records: list[ImageRecord], size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, list[ImageRecord]]:
    """(images float16 (N, S, S), labels uint8 (N, S, S), the records kept) at the model size S
    (float16: 0.5 MB per 512 px image); unreadable cases become rejects."""
    xs, ys, kept = [], [], []
    for rec in tqdm(records, desc="anatomy load", unit="img", disable=not progress):
        case = inputs.load(rec)
        if case is None:
            continue
        img, lab = case
        xs.append(resize_float(img, size).astype(np.float16))
        ys.append(resize_labels(lab, size))
        kept.append(rec)
    if not kept:
        raise GazeprepError(f"{inputs.root}: no readable training case ({len(inputs.rejects)} rejected)")
    return np.stack(xs), np.stack(ys), kept


def _held_out_cases(
    inputs: _TrainInputs, records: list[ImageRecord], size: int, held_out: list[str]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The held-out cases, loaded lazily one at a time (full-size masks can be large): (image at
    the model size, labels at the mask size); the ids evaluated are appended to ``held_out``."""
    for rec in records:
        case = inputs.load(rec)
        if case is None:
            continue
        held_out.append(rec.image_id)
        yield resize_float(case[0], size), case[1]


def _write_model_folder(
    out: Path,
    model: Samed,
    metrics: dict,
    inputs: _TrainInputs,
    settings: TrainSettings,
    checkpoint: str | Path | None,
) -> None:
    """``config.json`` + ``samed.pt``, ``metrics.json`` and ``rejects.parquet`` in ``out``."""
    extra = {
        "trained_on": inputs.dataset,
        "settings": asdict(settings),
        "checkpoint": str(checkpoint) if checkpoint else None,
    }
    save_model(model, out, extra=extra)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    atomic_write_parquet(rejects_frame(inputs.rejects), out / "rejects.parquet")


def run_train(
    root: str | Path,
    images_root: str | Path,
    out: str | Path,
    *,
    dataset: str = "egd-cxr",
    checkpoint: str | Path | None = None,
    config: str = "vit_b",
    settings: TrainSettings | None = None,
    lora_rank: int = 4,
    device: str = "auto",
    val_fraction: float = 0.2,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune SAMed on the masks of ``dataset``'s release at ``root`` (EGD-CXR, the one that
    ships them) and write the model folder ``out``.

    Stages: check the start, list the usable cases (mask files and image present), split them by
    subject, load the training arrays, train, evaluate on the held-out subjects, write the folder:
    ``config.json`` + ``samed.pt`` (see :func:`~gazeprep.anatomy.model.save_model`), ``metrics.json``
    (Dice/IoU per structure on the held-out subjects, loss curve summary, split) and
    ``rejects.parquet`` (cases skipped and why). Returns the metrics dict.
    """
    settings = settings or TrainSettings()
    _check_start(config, checkpoint)
    cfg = preset(config, lora_rank=lora_rank)
    dev = resolve_device(device)
    inputs = _TrainInputs(dataset, Path(root), Path(images_root), cfg.classes, [])
    usable = _usable_cases(inputs, limit)
    train_recs, val_recs = split_by_subject(usable, val_fraction, settings.seed)
    x, y, train_recs = _training_arrays(inputs, train_recs, cfg.image_size, progress)

    torch.manual_seed(settings.seed)  # --seed covers the initialisation too (random-init presets, LoRA)
    model = build_samed(cfg, checkpoint)
    t0 = time.time()
    losses = train_samed(model, x, y, settings, dev, progress=progress)
    train_s = time.time() - t0
    held_out: list[str] = []
    metrics = evaluate(model, _held_out_cases(inputs, val_recs, cfg.image_size, held_out), dev)
    k = max(len(losses) // 10, 1)
    metrics.update(
        {
            "dataset": dataset,
            "config": cfg.name,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "settings": asdict(settings),
            "device": str(dev),
            "n_train": len(train_recs),
            "n_rejected": len(inputs.rejects),
            "held_out_image_ids": held_out,
            "loss_first": float(np.mean(losses[:k])) if losses else None,
            "loss_last": float(np.mean(losses[-k:])) if losses else None,
            "iterations": len(losses),
            "train_seconds": round(train_s, 2),
        }
    )
    _write_model_folder(Path(out), model, metrics, inputs, settings, checkpoint)
    return metrics


__all__ = [
    "TrainSettings",
    "soft_dice_loss",
    "samed_loss",
    "lr_at",
    "rotate_batch",
    "downsample_labels",
    "train_samed",
    "predict_logits",
    "logits_to_labels",
    "evaluate",
    "split_by_subject",
    "run_train",
    "load_training_case",
]
