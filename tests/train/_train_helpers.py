"""Shared helpers of the trainer tests: train a tiny preset on the synthetic export."""

from __future__ import annotations

import torch

from gazeprep.train.data import GazeDataset
from gazeprep.train.loop import TrainConfig, evaluate, fit
from gazeprep.train.models import get_model, get_objective, resolve_config
from gazeprep.train.synthetic import CLASSES, make_synthetic_export


def tiny_setup(name: str, overrides: dict | None = None, n_cases: int = 24, unannotated: int = 0, seed: int = 0):
    """Build ``name``'s tiny preset and a synthetic dataset of ``n_cases`` cases (seeded).

    Returns (model, objective, dataset, train_config, make_dataset) where ``make_dataset(n, seed)``
    builds another synthetic dataset with the same targets, labels and size (e.g. a held-out set).
    """
    torch.manual_seed(seed)
    over = {k: dict(v) for k, v in (overrides or {}).items()}
    over.setdefault("data", {}).setdefault("labels", list(CLASSES))
    cfg = resolve_config(name, {"preset": "tiny", **over})
    data = cfg["data"]

    def make_dataset(n: int, data_seed: int, unannotated: int = 0) -> GazeDataset:
        ex = make_synthetic_export(n, seed=data_seed, unannotated=unannotated)
        return GazeDataset(
            ex,
            targets=data.get("targets") or list(CLASSES),
            labels=data["labels"],
            size=data["size"],
            augment=data.get("augment"),
        )

    ds = make_dataset(n_cases, seed, unannotated)
    model = get_model(name, cfg)
    objective = get_objective(name, cfg)
    tc = TrainConfig.from_dict({**cfg["train"], "seed": seed})
    return model, objective, ds, tc, make_dataset


def tiny_run(name: str, overrides: dict | None = None, n_cases: int = 24, unannotated: int = 0, seed: int = 0):
    """Build ``name``'s tiny preset, evaluate at init, train, evaluate again.

    Returns (before, after, history, model, objective, dataset).
    """
    model, objective, ds, tc, _ = tiny_setup(name, overrides, n_cases, unannotated, seed)
    before = evaluate(model, objective, ds, tc)
    history = fit(model, objective, ds, tc)
    after = evaluate(model, objective, ds, tc)
    return before, after, history, model, objective, ds
