"""Shared helpers of the trainer tests: train a tiny preset on the synthetic export."""

from __future__ import annotations

import torch

from gazeprep.train.data import GazeDataset
from gazeprep.train.loop import TrainConfig, evaluate, fit
from gazeprep.train.models import get_model, get_objective, resolve_config
from gazeprep.train.synthetic import CLASSES, make_synthetic_export


def tiny_run(name: str, overrides: dict | None = None, n_cases: int = 24, unannotated: int = 0, seed: int = 0):
    """Build ``name``'s tiny preset, evaluate at init, train, evaluate again.

    Returns (before, after, history, model, objective, dataset).
    """
    torch.manual_seed(seed)
    ex = make_synthetic_export(n_cases, seed=seed, unannotated=unannotated)
    over = {k: dict(v) for k, v in (overrides or {}).items()}
    over.setdefault("data", {}).setdefault("labels", list(CLASSES))
    cfg = resolve_config(name, {"preset": "tiny", **over})
    data = cfg["data"]
    ds = GazeDataset(ex, targets=data.get("targets") or list(CLASSES), labels=data["labels"], size=data["size"], augment=data.get("augment"))
    model = get_model(name, cfg)
    objective = get_objective(name, cfg)
    tc = TrainConfig.from_dict({**cfg["train"], "seed": seed})
    before = evaluate(model, objective, ds, tc)
    history = fit(model, objective, ds, tc)
    after = evaluate(model, objective, ds, tc)
    return before, after, history, model, objective, ds
