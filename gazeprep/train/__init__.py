"""The thin trainer: the papers' models and losses, trained on exported shards.

torch is imported only here (and in ``gazeprep.anatomy``). Layout:

* :mod:`gazeprep.train.data` - ``GazeDataset`` over an export (letterbox, paired augmentation,
  labels, masks), ``subject_split``, ``seed_everything``, the in-memory ``MemoryExport``;
* :mod:`gazeprep.train.losses` - the papers' losses (MIL with BRN, selective MSE, eq. 11, KL, Dice...);
* :mod:`gazeprep.train.models` - the registry (``get_model``, ``get_objective``, ``list_models``) and
  one module per paper: ``ggcam`` (002), ``karargyris`` (003), ``lanfredi`` (004), ``qiu`` (001),
  ``iai`` (000), ``gradcam`` (Grad-CAM family baselines);
* :mod:`gazeprep.train.loop` - ``fit`` (stages, atomic checkpoints, resume, per-epoch metrics);
* :mod:`gazeprep.train.run` - ``train_run`` / ``predict_run`` behind ``gazeprep train`` / ``predict``;
* :mod:`gazeprep.train.synthetic` - a synthetic export for tests and smoke runs.

Quick use::

    from gazeprep.train import GazeDataset, get_model, get_objective, fit, TrainConfig
    ds = GazeDataset(load_export("out"), targets=["full"], labels=["normal", "chf", "pneumonia"], size=64)
    cfg = {"preset": "tiny"}
    fit(get_model("ggcam-resnet50", cfg), get_objective("ggcam-resnet50", cfg), ds, TrainConfig(epochs=2))
"""

from __future__ import annotations

from gazeprep.train.data import GazeDataset, MemoryExport, seed_everything, subject_split
from gazeprep.train.loop import TrainConfig, evaluate, fit
from gazeprep.train.models import get_model, get_objective, list_models, resolve_config

__all__ = [
    "GazeDataset",
    "MemoryExport",
    "TrainConfig",
    "evaluate",
    "fit",
    "get_model",
    "get_objective",
    "list_models",
    "resolve_config",
    "seed_everything",
    "subject_split",
]
