"""One training loop for every model: stages, checkpoints, resume, per-epoch metrics.

:func:`fit` trains ``model`` with ``objective`` (see :mod:`gazeprep.train.models.base`) on a
``GazeDataset``. Multi-stage models (001, 000) run their stages in order, each with a fresh
optimiser over what that stage trains. After every epoch a checkpoint (state dicts and history
only) is written atomically to ``out_dir/checkpoint.pt``; with ``resume`` a rerun continues from it
and ends with the same weights as an uninterrupted run: shuffling, augmentation and dropout are
seeded from ``(seed, epoch)``, not from a global random state.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError
from gazeprep.train.metrics import map_metrics

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Options of :func:`fit` (all have defaults; ``from_dict`` rejects unknown keys)."""

    epochs: int = 10  # per stage unless stage_epochs names it
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam, adamw, amsgrad (004), sgd
    device: str = "auto"
    seed: int = 0
    out_dir: str | None = None
    resume: bool = True
    progress: bool = True
    num_workers: int = 0
    stages: list[str] | None = None  # default: every stage of the model
    stage_epochs: dict[str, int] = field(default_factory=dict)
    stage_lr: dict[str, float] = field(default_factory=dict)
    max_batches: int | None = None  # cap per epoch (smoke runs)
    stop_after_epochs: int | None = None  # stop early after this many epochs in this call (tests, time limits)
    recalibrate_bn: bool = False  # recompute batch-norm statistics after each epoch (short runs)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise GazeprepError(f"unknown train options {extra}; known: {sorted(known)}")
        return cls(**d)


def _collate(items: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (torch.tensor(vals) if isinstance(vals[0], (int, float, bool)) else vals)
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _optimizer(params, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "amsgrad":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, amsgrad=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise GazeprepError(f"unknown optimizer {cfg.optimizer!r}; use adam, amsgrad, adamw or sgd")


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``: no code is unpickled)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GazeprepError(f"{path}: checkpoint not found") from None


def _schedule(model: nn.Module, cfg: TrainConfig) -> list[str]:
    stages = cfg.stages or list(getattr(model, "stage_names", ("main",)))
    plan: list[str] = []
    for s in stages:
        plan += [s] * int(cfg.stage_epochs.get(s, cfg.epochs))
    return plan


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, device: torch.device) -> None:
    """Recompute the running statistics of the *trainable* batch-norm layers as exact averages over
    ``loader`` (like ``torch.optim.swa_utils.update_bn``, but frozen parts keep theirs). Short runs
    need it: after a few dozen steps the running averages still hold their initial values, so eval
    mode would not match the trained network."""
    was = model.training
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    if not bns:
        model.train(was)
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    for batch in loader:
        model(batch["image"].to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was)



def _accumulate(res, b: int, sums: dict, preds: list, tgts: list) -> int:
    """Add one batch of ``b`` samples to the running loss sums (batch-size weighted) and collect its
    predicted/target maps for the epoch metrics; returns ``b``."""
    sums["loss"] = sums.get("loss", 0.0) + float(res.total.detach()) * b
    for k, v in res.parts.items():
        sums[k] = sums.get(k, 0.0) + v * b
    if res.pred_maps is not None:
        preds.append(res.pred_maps.detach().cpu())
        tgts.append(res.target_maps.detach().cpu())
    return b

def evaluate(model: nn.Module, objective: nn.Module, data: Dataset, cfg: TrainConfig, device: torch.device | None = None) -> dict[str, float]:
    """Mean loss, its parts and map metrics (CC, KLD, IoU) over ``data`` in eval mode."""
    device = device or resolve_device(cfg.device)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=False, collate_fn=_collate, num_workers=cfg.num_workers)
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    preds, tgts = [], []
    grad_ctx = torch.enable_grad if getattr(objective, "needs_grad", False) else torch.no_grad
    for batch in loader:
        with grad_ctx():
            res = objective(model, _to(batch, device))
        n += _accumulate(res, len(batch["case_id"]), sums, preds, tgts)
    model.train(was)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    if preds:
        out.update(map_metrics(torch.cat(preds), torch.cat(tgts)))
    return out


def fit(model: nn.Module, objective: nn.Module, data: Dataset, config: TrainConfig | dict | None = None, val_data: Dataset | None = None) -> list[dict]:
    """Train and return the history: one dict per epoch (stage, epoch, train loss and parts, and the
    validation loss/metrics as ``val_*`` when ``val_data`` is given, else ``train_*`` map metrics).

    ``data`` should be a :class:`~gazeprep.train.data.GazeDataset` (its ``set_epoch`` picks the
    augmentation draws). With ``config.out_dir`` a checkpoint is written after each epoch and, with
    ``config.resume``, an existing one is continued.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    device = resolve_device(cfg.device)
    model.to(device)
    objective.to(device)
    plan = _schedule(model, cfg)
    history: list[dict] = []
    start = 0
    ckpt_path = Path(cfg.out_dir) / CHECKPOINT if cfg.out_dir else None
    opt_state = None
    if ckpt_path is not None and cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        objective.load_state_dict(ck["objective"])
        start = int(ck["epoch"])
        history = list(ck.get("history", []))
        opt_state = ck.get("optimizer")
    optimizer = None
    current_stage = None
    done_this_call = 0
    for e in range(start, len(plan)):
        stage = plan[e]
        if stage != current_stage:
            if hasattr(model, "set_stage"):
                model.set_stage(stage)
            params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
            if not params:
                raise GazeprepError(f"stage {stage!r} has nothing to train")
            optimizer = _optimizer(params, cfg, cfg.stage_lr.get(stage, cfg.lr))
            if opt_state is not None and e == start and e > 0 and plan[e - 1] == stage:
                optimizer.load_state_dict(opt_state)
            current_stage = stage
        model.train()
        torch.manual_seed(cfg.seed * 100003 + e)
        if hasattr(data, "set_epoch"):
            data.set_epoch(e)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + e)
        loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=gen, collate_fn=_collate, num_workers=cfg.num_workers, drop_last=len(data) > cfg.batch_size)
        sums: dict[str, float] = {}
        n = 0
        preds, tgts = [], []
        bar = tqdm(loader, desc=f"{stage} epoch {e + 1}/{len(plan)}", disable=not cfg.progress, leave=False)
        for bi, batch in enumerate(bar):
            if cfg.max_batches is not None and bi >= cfg.max_batches:
                break
            res = objective(model, _to(batch, device))
            if not torch.isfinite(res.total):
                raise GazeprepError(f"loss is not finite at epoch {e + 1} ({res.parts}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            res.total.backward()
            optimizer.step()
            n += _accumulate(res, len(batch["case_id"]), sums, preds, tgts)
            bar.set_postfix(loss=f"{float(res.total.detach()):.4g}")
        if cfg.recalibrate_bn:
            recalibrate_batchnorm(model, DataLoader(data, batch_size=cfg.batch_size, shuffle=False, collate_fn=_collate), device)
        rec: dict[str, Any] = {"stage": stage, "epoch": e + 1}
        rec.update({f"train_{k}": v / max(n, 1) for k, v in sums.items()})
        if val_data is not None:
            rec.update({f"val_{k}": v for k, v in evaluate(model, objective, val_data, cfg, device).items()})
        elif preds:
            rec.update({f"train_{k}": v for k, v in map_metrics(torch.cat(preds), torch.cat(tgts)).items()})
        history.append(rec)
        if cfg.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        if ckpt_path is not None:
            save_atomic({"model": model.state_dict(), "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                         "epoch": e + 1, "history": history}, ckpt_path)
            (ckpt_path.parent / "history.json").write_text(json.dumps(history, indent=1))
        done_this_call += 1
        if cfg.stop_after_epochs is not None and done_this_call >= cfg.stop_after_epochs:
            break
    if plan and hasattr(model, "set_stage"):
        model.set_stage(plan[-1] if current_stage is None else current_stage)
    return history


def config_dict(cfg: TrainConfig) -> dict:
    """A plain dict of ``cfg`` (for writing the run's resolved config)."""
    return asdict(cfg)
