"""One training loop for every model: stages, schedules, model selection, checkpoints, resume.

:func:`fit` trains ``model`` with ``objective`` (see :mod:`gazeprep.train.models.base`) on a
``GazeDataset``. Multi-stage models (001, 000) run their stages in order, each with a fresh
optimiser (and learning-rate schedule) over what that stage trains.

The papers' protocols are options of :class:`TrainConfig`:

* a length in epochs or in optimiser steps (``iterations``, e.g. I-AI's 60,000), per stage if needed;
* a learning-rate schedule from ``torch.optim.lr_scheduler`` (``scheduler``: step, multistep,
  plateau, poly, cosine, or 003's cyclical multiplier), stepped per epoch or per optimiser step;
* model selection on the validation split: ``monitor`` names a key of the epoch record (e.g.
  ``val_loss``, ``val_auc_mean``), the best epoch of each stage is kept in ``best.pt`` and its
  weights are restored at the end of the stage (``select_best``); ``early_stop_patience`` stops a
  stage after that many epochs without improvement and ``stop_lr`` when the learning rate falls
  below it; ``scheduler.reload_best`` reloads the best weights whenever the plateau schedule lowers
  the learning rate (GG-CAM's and Qiu's code);
* gradient clipping by norm or by value.

After every epoch a checkpoint (state dicts, schedule state, selection state and history only) is
written atomically to ``out_dir/checkpoint.pt``; with ``resume`` a rerun continues from it and ends
with the same weights as an uninterrupted run: shuffling, augmentation and dropout are seeded from
``(seed, epoch)``, not from a global random state.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gazeprep._atomic import atomic_write, atomic_write_text
from gazeprep.device import resolve_device
from gazeprep.errors import GazeprepError
from gazeprep.train.metrics import map_metrics

if TYPE_CHECKING:
    from gazeprep.train.models.base import Batch, LossOutput

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"

SCHEDULERS = ("none", "step", "multistep", "plateau", "poly", "cosine", "cyclic")

#: One epoch of a run's history: ``stage`` and ``early_stop`` are text, ``epoch`` and
#: ``reloaded_best_epoch`` whole numbers, ``improved`` a flag, every loss, metric and ``lr`` a float.
EpochRecord: TypeAlias = dict[str, float | str]


@dataclass
class TrainConfig:
    """Options of :func:`fit` (all have defaults; ``from_dict`` rejects unknown keys).

    Length: a stage runs ``stage_iterations[s]``, else ``stage_epochs[s]``, else ``iterations``, else
    ``epochs`` (epochs of the training set; with iterations, the number of epochs is
    ``ceil(iterations / batches per epoch)`` and the last one stops at the exact step count).

    ``scheduler`` (a dict with ``kind`` and that kind's options; see :func:`build_scheduler`);
    ``monitor`` / ``monitor_mode`` (``min``/``max``; default: ``max`` for AUC, accuracy, CC and IoU
    keys, else ``min``) pick the best epoch of each stage; ``select_best`` keeps ``best.pt`` and
    restores it at the end of each stage.
    """

    epochs: int = 10  # per stage unless stage_epochs names it
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam, adamw, amsgrad (004), sgd
    momentum: float = 0.9  # sgd only
    betas: tuple[float, float] | None = None  # Adam/AdamW betas (torch defaults when None)
    device: str = "auto"
    seed: int = 0
    out_dir: str | None = None
    resume: bool = True
    progress: bool = True
    num_workers: int = 0
    stages: list[str] | None = None  # default: every stage of the model
    stage_epochs: dict[str, int] = field(default_factory=dict)
    stage_lr: dict[str, float] = field(default_factory=dict)
    stage_batch_size: dict[str, int] = field(default_factory=dict)
    iterations: int | None = None  # optimiser steps per stage instead of epochs
    stage_iterations: dict[str, int] = field(default_factory=dict)
    scheduler: dict | None = None
    monitor: str | None = None  # e.g. "val_loss", "val_auc_mean"
    monitor_mode: str | None = None  # "min" | "max" (default from the key)
    select_best: bool = False
    early_stop_patience: int | None = None  # epochs without improvement of the monitor
    stop_lr: float | None = None  # stop a stage once the learning rate falls below this
    grad_clip_norm: float | None = None  # clip_grad_norm_ over all trained parameters (I-AI: 0.01)
    grad_clip_value: float | None = None  # clip_grad_value_ (003's code: 0.1)
    max_batches: int | None = None  # cap per epoch (smoke runs)
    stop_after_epochs: int | None = None  # stop early after this many epochs in this call (tests, time limits)
    recalibrate_bn: bool = False  # recompute batch-norm statistics after each epoch (short runs)

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise GazeprepError(f"unknown train options {extra}; known: {sorted(known)}")
        if d.get("betas") is not None:
            d["betas"] = tuple(float(b) for b in d["betas"])
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`GazeprepError` (one line) for values that cannot work."""
        if self.scheduler is not None:
            if not isinstance(self.scheduler, dict) or self.scheduler.get("kind", "none") not in SCHEDULERS:
                raise GazeprepError(
                    f"train.scheduler must be a mapping with kind one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}"
                )
        if self.monitor_mode not in (None, "min", "max"):
            raise GazeprepError(f"train.monitor_mode must be min or max, not {self.monitor_mode!r}")
        if (self.select_best or self.early_stop_patience) and not self.monitor:
            raise GazeprepError("train.select_best and train.early_stop_patience need train.monitor (e.g. val_loss)")
        for name in ("iterations", "early_stop_patience"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise GazeprepError(f"train.{name} must be >= 1, got {v}")


def monitor_mode(cfg: TrainConfig) -> Literal["min", "max"]:
    """``min`` or ``max`` for ``cfg.monitor`` (explicit ``monitor_mode`` wins)."""
    if cfg.monitor_mode:
        return "max" if cfg.monitor_mode == "max" else "min"  # validate() allows only these two
    key = (cfg.monitor or "").lower()
    return "max" if any(t in key for t in ("auc", "acc", "cc", "iou", "sim")) else "min"


def _collate(items: list[dict[str, Any]]) -> Batch:
    """Stack items into a batch; items of :meth:`GazeDataset.__getitems__` (views of one batch
    tensor, carrying it under ``_batch``) are handed on as that batch, without copying."""
    batch = items[0].get("_batch") if items else None
    if batch is not None and all(it.get("_batch") is batch for it in items):
        return batch
    out: Batch = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = (
            torch.stack(vals)
            if isinstance(vals[0], torch.Tensor)
            else (torch.tensor(vals) if isinstance(vals[0], (int, float, bool)) else vals)
        )
    return out


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class _AdamOptions(TypedDict, total=False):
    betas: tuple[float, float]


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    extra: _AdamOptions = {} if cfg.betas is None else {"betas": (cfg.betas[0], cfg.betas[1])}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "amsgrad":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, amsgrad=True, **extra)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise GazeprepError(f"unknown optimizer {cfg.optimizer!r}; use adam, amsgrad, adamw or sgd")


def cyclic_factor(epoch: int, step_size: int, min_factor: float, max_factor: float = 1.0) -> float:
    """003's ``cyclical_lr(step_sz, min_lr, max_lr, mode='triangular2')`` as a LambdaLR factor.

    A triangle wave of period ``2 * step_size`` epochs between ``min_factor`` and ``max_factor``
    whose amplitude halves every cycle: ``cycle = floor(1 + e / (2 s))``,
    ``x = |e / s - 2 cycle + 1|``, factor ``= min + (max - min) * max(0, 1 - x) / 2^(cycle - 1)``.
    (003's code passes its learning rate as ``min_lr``, i.e. as a *factor* of itself.)
    """
    cycle = math.floor(1 + epoch / (2 * step_size))
    x = abs(epoch / step_size - 2 * cycle + 1)
    return min_factor + (max_factor - min_factor) * max(0.0, 1 - x) / (2.0 ** (cycle - 1))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    spec: dict[str, Any] | None,
    total_epochs: int,
    total_steps: int,
    mode: Literal["min", "max"] = "min",
) -> tuple[LRScheduler | None, str | None]:
    """``(scheduler, interval)`` for one stage, or ``(None, None)``.

    ``spec['kind']``:

    * ``step``: ``StepLR(step_size, gamma=0.1)`` per epoch;
    * ``multistep``: ``MultiStepLR(milestones, gamma=0.1)`` per epoch;
    * ``plateau``: ``ReduceLROnPlateau(mode, factor=0.1, patience=10, threshold=1e-4, threshold_mode,
      cooldown, min_lr, eps=1e-8)`` on the monitored value, per epoch (``reload_best`` is read by
      :func:`fit`);
    * ``poly``: ``LambdaLR`` with factor ``(1 - t / T) ** power`` (default power 0.9, detectron2's
      WarmupPolyLR without warm-up) over ``T`` = the stage's optimiser steps, per step, after an
      optional linear warm-up of ``warmup_steps`` from ``warmup_factor``;
    * ``cosine``: ``CosineAnnealingLR(T_max, eta_min=0)`` with ``T_max`` = the stage's epochs (or
      steps with ``interval: step``);
    * ``cyclic``: 003's triangular-2 ``LambdaLR`` factor (:func:`cyclic_factor`) per epoch.
    """
    if not spec or spec.get("kind", "none") == "none":
        return None, None
    s = dict(spec)
    kind = s.pop("kind")
    sched = torch.optim.lr_scheduler
    try:
        if kind == "step":
            return sched.StepLR(
                optimizer, step_size=int(s.get("step_size", 10)), gamma=float(s.get("gamma", 0.1))
            ), "epoch"
        if kind == "multistep":
            return sched.MultiStepLR(
                optimizer, milestones=[int(m) for m in s["milestones"]], gamma=float(s.get("gamma", 0.1))
            ), "epoch"
        if kind == "plateau":
            return sched.ReduceLROnPlateau(
                optimizer,
                mode=mode,
                factor=float(s.get("factor", 0.1)),
                patience=int(s.get("patience", 10)),
                threshold=float(s.get("threshold", 1e-4)),
                threshold_mode=s.get("threshold_mode", "rel"),
                cooldown=int(s.get("cooldown", 0)),
                min_lr=float(s.get("min_lr", 0.0)),
                eps=float(s.get("eps", 1e-8)),
            ), "plateau"
        if kind == "poly":
            power, total = float(s.get("power", 0.9)), max(int(total_steps), 1)
            warm, wf = int(s.get("warmup_steps", 0)), float(s.get("warmup_factor", 1.0))

            def poly(t: int) -> float:
                f = (1.0 - min(t, total) / total) ** power
                if t < warm:
                    f *= wf + (1 - wf) * t / warm
                return f

            return sched.LambdaLR(optimizer, poly), "step"
        if kind == "cosine":
            interval = s.get("interval", "epoch")
            t_max = int(s.get("t_max") or (total_steps if interval == "step" else total_epochs))
            return sched.CosineAnnealingLR(
                optimizer, T_max=max(t_max, 1), eta_min=float(s.get("eta_min", 0.0))
            ), interval
        if kind == "cyclic":
            step, lo, hi = int(s["step_size"]), float(s["min_factor"]), float(s.get("max_factor", 1.0))
            return sched.LambdaLR(optimizer, lambda e: cyclic_factor(e, step, lo, hi)), "epoch"
    except KeyError as exc:
        raise GazeprepError(f"train.scheduler kind {kind!r} needs option {exc.args[0]!r}") from None
    raise GazeprepError(f"unknown scheduler kind {kind!r}; use one of {', '.join(SCHEDULERS)}")


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` of ``obj`` written atomically to ``path`` by the package's one atomic writer.

    Serialised in memory first: ``torch.save`` reports a write fault (disk full) as a RuntimeError,
    the atomic writer as a :class:`~gazeprep.errors.StorageError` naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getbuffer())


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``: no code is unpickled)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GazeprepError(f"{path}: checkpoint not found") from None


@dataclass
class _Epoch:
    stage: str
    step_limit: int | None  # optimiser steps in this epoch (None: the whole loader)


def _stage_batch(cfg: TrainConfig, stage: str) -> int:
    return int(cfg.stage_batch_size.get(stage, cfg.batch_size))


def _batches_per_epoch(n: int, batch: int, cfg: TrainConfig) -> int:
    nb = n // batch if n > batch else 1  # drop_last when the set is larger than a batch
    return min(nb, cfg.max_batches) if cfg.max_batches is not None else nb


def _plan(model: nn.Module, cfg: TrainConfig, n_items: int) -> list[_Epoch]:
    """One entry per epoch of the whole run (every stage in order)."""
    stages = cfg.stages or list(getattr(model, "stage_names", ("main",)))
    plan: list[_Epoch] = []
    for s in stages:
        iters = cfg.stage_iterations.get(s)
        if iters is None and s not in cfg.stage_epochs:
            iters = cfg.iterations
        if iters is not None:
            per = max(_batches_per_epoch(n_items, _stage_batch(cfg, s), cfg), 1)
            full, rest = divmod(int(iters), per)
            plan += [_Epoch(s, per)] * full + ([_Epoch(s, rest)] if rest else [])
        else:
            plan += [_Epoch(s, None)] * int(cfg.stage_epochs.get(s, cfg.epochs))
    return plan


def _stage_steps(plan: list[_Epoch], stage_start: int, n_items: int, cfg: TrainConfig) -> int:
    """Optimiser steps of the stage that starts at plan index ``stage_start``."""
    stage = plan[stage_start].stage
    per = _batches_per_epoch(n_items, _stage_batch(cfg, stage), cfg)
    total = 0
    for ep in plan[stage_start:]:
        if ep.stage != stage:
            break
        total += per if ep.step_limit is None else ep.step_limit
    return total


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable[Batch], device: torch.device) -> None:
    """Recompute the running statistics of the *trainable* batch-norm layers as exact averages over
    ``loader`` (like ``torch.optim.swa_utils.update_bn``, but frozen parts keep theirs). Short runs
    need it: after a few dozen steps the running averages still hold their initial values, so eval
    mode would not match the trained network. A batch of one sample (a remainder) is left out: its
    variance is undefined and batch norm refuses it in training mode."""
    was = model.training
    model.train()
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    if not bns:
        model.train(was)
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    for batch in loader:
        images = batch["image"]
        if images.shape[0] < 2:  # batch norm has no variance of one sample (a loader's remainder)
            continue
        model(images.to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 positive, 0 negative): the
    Mann-Whitney statistic with tied scores counted half, ``(R+ - n+(n+ + 1)/2) / (n+ n-)`` where
    ``R+`` is the sum of the positives' average ranks. NaN when a class is missing."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def class_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``auc_mean`` (mean over labels of the one-vs-rest ROC AUC, labels with both classes among the
    known values only) and ``acc`` (argmax accuracy over samples with exactly one positive label).

    ``scores``: (N, C) class scores; ``labels``: (N, C) 1 / 0 / NaN."""
    s = scores.double().numpy()
    y = labels.double().numpy()
    aucs = []
    for c in range(s.shape[1]):
        known = ~np.isnan(y[:, c])
        a = roc_auc(s[known, c], y[known, c])
        if not math.isnan(a):
            aucs.append(a)
    out: dict[str, float] = {}
    if aucs:
        out["auc_mean"] = float(np.mean(aucs))
    single = (np.nan_to_num(y, nan=0.0) > 0.5).sum(1) == 1
    if single.any():
        out["acc"] = float((s[single].argmax(1) == np.nan_to_num(y[single], nan=0.0).argmax(1)).mean())
    return out


class _Sums:
    """Running batch-size-weighted loss sums, predicted/target maps and class scores of an epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.preds: list[torch.Tensor] = []
        self.tgts: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, res: LossOutput, batch: Batch) -> None:
        b = len(batch["case_id"])
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(res.total.detach()) * b
        for k, v in res.parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * b
        if res.pred_maps is not None:
            if res.target_maps is None:
                raise ValueError("an objective returned predicted maps without their target maps")
            self.preds.append(res.pred_maps.detach().cpu())
            self.tgts.append(res.target_maps.detach().cpu())
        scores = getattr(res, "scores", None)
        if scores is not None and "labels" in batch:
            self.scores.append(scores.detach().float().cpu())
            self.labels.append(batch["labels"].detach().float().cpu())
        self.n += b

    def result(self, with_maps: bool = True) -> dict[str, float]:
        out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
        if with_maps and self.preds:
            out.update(map_metrics(torch.cat(self.preds), torch.cat(self.tgts)))
        if self.scores:  # an objective's own part of the same name (e.g. 000's acc) is kept
            for k, v in class_metrics(torch.cat(self.scores), torch.cat(self.labels)).items():
                out.setdefault(k, v)
        return out


def evaluate(
    model: nn.Module, objective: nn.Module, data: Dataset, cfg: TrainConfig, device: torch.device | None = None
) -> dict[str, float]:
    """Mean loss, its parts, map metrics (CC, KLD, IoU) and, for models with class scores,
    ``auc_mean`` and ``acc`` over ``data`` in eval mode."""
    device = device or resolve_device(cfg.device)
    loader = DataLoader(
        data, batch_size=cfg.batch_size, shuffle=False, collate_fn=_collate, num_workers=cfg.num_workers
    )
    was = model.training
    model.eval()
    acc = _Sums()
    grad_ctx = torch.enable_grad if getattr(objective, "needs_grad", False) else torch.no_grad
    for batch in loader:
        with grad_ctx():
            res = objective(model, _to(batch, device))
        acc.add(res, batch)
    model.train(was)
    return acc.result()


#: Class metrics that a split can leave undefined (one class only): a missing one reads as NaN.
_MAYBE_UNDEFINED = ("auc_mean", "acc")


def _monitored(rec: dict, key: str) -> float:
    """The monitored value of an epoch record (``val_x`` falls back to ``train_x`` when there is no
    validation split, as 004's code does). An AUC or accuracy the data leave undefined (every case of
    one class) is NaN, which never counts as an improvement."""
    if key in rec:
        return float(rec[key])
    if key.startswith("val_") and "train_" + key[4:] in rec:
        return float(rec["train_" + key[4:]])
    if key.endswith(_MAYBE_UNDEFINED):
        return float("nan")
    keys = sorted(k for k in rec if k.startswith(("val_", "train_")))
    raise GazeprepError(f"train.monitor {key!r} is not in the epoch record; available: {', '.join(keys)}")


def _better(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def _params(model: nn.Module, objective: nn.Module) -> list[nn.Parameter]:
    return [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]


class _Selection(TypedDict):
    """Model-selection state of the stage being trained (a checkpoint's ``selection``): the best
    monitored value and its epoch, epochs since it (``bad``), whether the stage stopped early, and
    the optimiser steps taken."""

    stage: str | None
    best: float | None
    best_epoch: int | None
    bad: int
    stopped: bool
    steps: int


def _fresh_selection(stage: str | None) -> _Selection:
    return {"stage": stage, "best": None, "best_epoch": None, "bad": 0, "stopped": False, "steps": 0}


@dataclass
class _Stage:
    """The stage being trained: its name, optimiser and learning-rate schedule (``interval``: when the
    schedule steps, see :func:`build_scheduler`)."""

    name: str
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    interval: str | None


def _set_stage(model: nn.Module, stage: str) -> None:
    """Switch a staged model (one with ``set_stage``, e.g. a ``GazeModel``) to ``stage``; a model
    without stages trains as it is."""
    set_stage = getattr(model, "set_stage", None)
    if set_stage is not None:
        set_stage(stage)


def _length(data: Dataset) -> int:
    """Number of items of a map-style dataset (one with ``__len__``)."""
    if not isinstance(data, Sized):
        raise GazeprepError(f"{type(data).__name__} has no length; fit needs a map-style dataset")
    return len(data)


class _Trainer:
    """One :func:`fit` call: the model, its plan of epochs, the stage being trained, the selection state,
    the best weights so far and the history, with one method per step of an epoch."""

    def __init__(
        self, model: nn.Module, objective: nn.Module, data: Dataset, cfg: TrainConfig, val_data: Dataset | None
    ) -> None:
        self.model, self.objective, self.data, self.val_data, self.cfg = model, objective, data, val_data, cfg
        self.device = resolve_device(cfg.device)
        model.to(self.device)
        objective.to(self.device)
        self.n_items = _length(data)
        self.plan = _plan(model, cfg, self.n_items)
        self.mode = monitor_mode(cfg)
        self.history: list[EpochRecord] = []
        self.start = 0  # first epoch this call trains
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self.ckpt_path = self.out_dir / CHECKPOINT if self.out_dir else None
        self.resume_state: dict[str, Any] | None = None
        # selection state of the current stage; the best weights live in memory and in best.pt
        self.sel = _fresh_selection(None)
        self.best_state: dict[str, Any] | None = None
        self.stage: _Stage | None = None

    def resume(self) -> None:
        """Continue from ``out_dir/checkpoint.pt`` when ``resume`` is on and it exists: weights, history,
        selection state and (when it holds the selection's value) ``best.pt``."""
        if self.ckpt_path is None or self.out_dir is None or not self.cfg.resume or not self.ckpt_path.exists():
            return
        ck = load_checkpoint(self.ckpt_path)
        self.model.load_state_dict(ck["model"])
        self.objective.load_state_dict(ck["objective"])
        self.start = int(ck["epoch"])
        self.history = list(ck.get("history", []))
        self.resume_state = ck
        self.sel.update(ck.get("selection", {}))
        if (self.out_dir / BEST).exists() and self.sel.get("best") is not None:
            self.best_state = load_checkpoint(self.out_dir / BEST)

    def restore_best(self, of_stage: str | None) -> None:
        """Load the best weights kept for stage ``of_stage`` (nothing when there are none)."""
        best = self.best_state
        if best is not None and of_stage is not None and best.get("stage") == of_stage:
            self.model.load_state_dict(best["model"])
            self.objective.load_state_dict(best["objective"])

    def begin_stage(self, e: int) -> _Stage:
        """Enter the stage of plan epoch ``e``: the previous stage's selected weights (``select_best``),
        the model's trainable parts, a fresh optimiser and schedule (their saved state when this call
        resumes inside the stage, else a fresh selection state)."""
        cfg, plan, stage = self.cfg, self.plan, self.plan[e].stage
        if cfg.select_best and e > 0 and plan[e - 1].stage != stage:
            self.restore_best(plan[e - 1].stage)  # the next stage starts from this stage's selected weights
        _set_stage(self.model, stage)
        params = _params(self.model, self.objective)
        if not params:
            raise GazeprepError(f"stage {stage!r} has nothing to train")
        optimizer = _optimizer(params, cfg, cfg.stage_lr.get(stage, cfg.lr))
        stage_start = next(i for i in range(len(plan)) if plan[i].stage == stage)
        stage_epochs = sum(1 for p in plan if p.stage == stage)
        scheduler, interval = build_scheduler(
            optimizer, cfg.scheduler, stage_epochs, _stage_steps(plan, stage_start, self.n_items, cfg), self.mode
        )
        ck = self.resume_state
        if ck is not None and e == self.start and e > 0 and plan[e - 1].stage == stage:
            optimizer.load_state_dict(ck["optimizer"])
            if scheduler is not None and ck.get("scheduler") is not None:
                scheduler.load_state_dict(ck["scheduler"])
        else:
            self.sel = _fresh_selection(stage)
            self.best_state = None
        return _Stage(stage, optimizer, scheduler, interval)

    def train_epoch(self, e: int, st: _Stage) -> _Sums:
        """One epoch of optimiser steps (shuffling, augmentation and dropout seeded from ``(seed, e)``),
        per-step schedules included; then the batch-norm recalibration when asked."""
        cfg, data, model, objective = self.cfg, self.data, self.model, self.objective
        bs = _stage_batch(cfg, st.name)
        model.train()
        torch.manual_seed(cfg.seed * 100003 + e)
        if hasattr(data, "set_epoch"):
            data.set_epoch(e)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + e)
        loader = DataLoader(
            data,
            batch_size=bs,
            shuffle=True,
            generator=gen,
            collate_fn=_collate,
            num_workers=cfg.num_workers,
            drop_last=self.n_items > bs,
        )
        step_limit = self.plan[e].step_limit
        limit = step_limit if step_limit is not None else cfg.max_batches
        acc = _Sums()
        bar = tqdm(loader, desc=f"{st.name} epoch {e + 1}/{len(self.plan)}", disable=not cfg.progress, leave=False)
        for bi, batch in enumerate(bar):
            if limit is not None and bi >= limit:
                break
            res = objective(model, _to(batch, self.device))
            if not torch.isfinite(res.total):
                raise GazeprepError(f"loss is not finite at epoch {e + 1} ({res.parts}); lower the learning rate")
            st.optimizer.zero_grad(set_to_none=True)
            res.total.backward()
            if cfg.grad_clip_value is not None:
                nn.utils.clip_grad_value_(_params(model, objective), cfg.grad_clip_value)
            if cfg.grad_clip_norm is not None:
                nn.utils.clip_grad_norm_(_params(model, objective), cfg.grad_clip_norm)
            st.optimizer.step()
            if st.interval == "step" and st.scheduler is not None:
                st.scheduler.step()
            self.sel["steps"] = int(self.sel.get("steps", 0)) + 1
            acc.add(res, batch)
            bar.set_postfix(loss=f"{float(res.total.detach()):.4g}")
        if cfg.recalibrate_bn:
            recalibrate_batchnorm(
                model, DataLoader(data, batch_size=bs, shuffle=False, collate_fn=_collate), self.device
            )
        return acc

    def record(self, e: int, st: _Stage, acc: _Sums) -> EpochRecord:
        """The epoch's record: training loss, parts and metrics (``train_*``; map metrics only without
        a validation split) and the validation ones (``val_*``)."""
        rec: EpochRecord = {"stage": st.name, "epoch": e + 1}
        rec.update({f"train_{k}": v for k, v in acc.result(with_maps=self.val_data is None).items()})
        if self.val_data is not None:
            val = evaluate(self.model, self.objective, self.val_data, self.cfg, self.device)
            rec.update({f"val_{k}": v for k, v in val.items()})
        return rec

    def select(self, e: int, st: _Stage, rec: EpochRecord) -> None:
        """Compare the monitored value with the stage's best: a new best is kept (in memory and in
        ``best.pt``) and marked ``improved``; otherwise the epochs without improvement count up."""
        if not self.cfg.monitor:
            return
        value = _monitored(rec, self.cfg.monitor)
        rec["improved"] = improved = _better(value, self.sel.get("best"), self.mode)
        if improved:
            self.sel["best"], self.sel["best_epoch"], self.sel["bad"] = value, e + 1, 0
            self.best_state = {
                "stage": st.name,
                "epoch": e + 1,
                "value": value,
                "model": _cpu_state(self.model),
                "objective": _cpu_state(self.objective),
                "optimizer": st.optimizer.state_dict(),
            }
            if self.out_dir is not None:
                save_atomic(self.best_state, self.out_dir / BEST)
        else:
            self.sel["bad"] = int(self.sel.get("bad", 0)) + 1

    def schedule(self, st: _Stage, rec: EpochRecord) -> None:
        """The per-epoch schedule step (a plateau drop reloads the best weights with ``reload_best``),
        the learning rate now in force (``lr``) and the early stops (``early_stop``)."""
        cfg, sched, optimizer = self.cfg, st.scheduler, st.optimizer
        if sched is not None and st.interval == "epoch":
            sched.step()
        elif isinstance(sched, ReduceLROnPlateau):
            before = [g["lr"] for g in optimizer.param_groups]
            sched.step(_monitored(rec, cfg.monitor or "val_loss"))
            after = [g["lr"] for g in optimizer.param_groups]
            best = self.best_state
            if (cfg.scheduler or {}).get("reload_best") and after[0] < before[0] and best is not None:
                # GG-CAM's and Qiu's NetLearn: on a learning-rate drop, go back to the best weights
                # (and optimiser state) so far, keeping the lowered rate
                self.model.load_state_dict(best["model"])
                self.objective.load_state_dict(best["objective"])
                optimizer.load_state_dict(best["optimizer"])
                for g, lr in zip(optimizer.param_groups, after):
                    g["lr"] = lr
                rec["reloaded_best_epoch"] = best["epoch"]
        lr_now = float(optimizer.param_groups[0]["lr"])
        rec["lr"] = lr_now  # after this epoch's schedule update: the rate the next step uses
        if cfg.early_stop_patience is not None and int(self.sel.get("bad", 0)) >= cfg.early_stop_patience:
            self.sel["stopped"] = True
            rec["early_stop"] = "patience"
        if cfg.stop_lr is not None and lr_now < cfg.stop_lr:
            self.sel["stopped"] = True
            rec["early_stop"] = "lr"

    def save(self, e: int, st: _Stage) -> None:
        """Write the checkpoint after epoch ``e`` (state dicts, schedule, selection, history) and
        ``history.json``, when the run has a folder."""
        if self.ckpt_path is None:
            return
        save_atomic(
            {
                "model": self.model.state_dict(),
                "objective": self.objective.state_dict(),
                "optimizer": st.optimizer.state_dict(),
                "scheduler": None if st.scheduler is None else st.scheduler.state_dict(),
                "selection": dict(self.sel),
                "epoch": e + 1,
                "history": self.history,
            },
            self.ckpt_path,
        )
        atomic_write_text(self.ckpt_path.parent / "history.json", json.dumps(self.history, indent=1))


def fit(
    model: nn.Module,
    objective: nn.Module,
    data: Dataset,
    config: TrainConfig | dict[str, Any] | None = None,
    val_data: Dataset | None = None,
) -> list[EpochRecord]:
    """Train and return the history: one dict per epoch (stage, epoch, train loss and parts,
    class metrics, and the validation loss/metrics as ``val_*`` when ``val_data`` is given, else
    ``train_*`` map metrics; with a monitor, ``improved`` marks the epochs that set a new best;
    ``lr``: the learning rate after the epoch's schedule update).

    ``data`` should be a :class:`~gazeprep.train.data.GazeDataset` (its ``set_epoch`` picks the
    augmentation draws). With ``config.out_dir`` a checkpoint is written after each epoch and, with
    ``config.resume``, an existing one is continued. With ``select_best`` the model ends with the
    weights of the best epoch of its last stage (each stage starts from its predecessor's best).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    run = _Trainer(model, objective, data, cfg, val_data)
    run.resume()
    done_this_call = 0
    finished = True
    for e in range(run.start, len(run.plan)):
        if run.stage is None or run.plan[e].stage != run.stage.name:
            run.stage = run.begin_stage(e)
        st = run.stage
        if run.sel.get("stopped"):
            continue  # early-stopped: skip the rest of this stage
        acc = run.train_epoch(e, st)
        rec = run.record(e, st, acc)
        run.select(e, st, rec)
        run.schedule(st, rec)
        run.history.append(rec)
        if cfg.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        run.save(e, st)
        done_this_call += 1
        if cfg.stop_after_epochs is not None and done_this_call >= cfg.stop_after_epochs and e + 1 < len(run.plan):
            finished = False
            break
    if finished and cfg.select_best and run.plan:
        run.restore_best(run.plan[-1].stage)
    if run.plan:
        _set_stage(model, run.plan[-1].stage if run.stage is None else run.stage.name)
    return run.history


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def config_dict(cfg: TrainConfig) -> dict:
    """A plain dict of ``cfg`` (for writing the run's resolved config)."""
    return asdict(cfg)
