"""Model registry: ``get_model(name, config)`` / ``get_objective(name, config)``.

A config is a dict with four sections, each optional::

    preset: default | tiny        # start from the model's preset, then apply the sections below
    model: {...}                  # keyword arguments of the model class
    loss:  {...}                  # keyword arguments of the objective
    data:  {size, targets, labels, augment, mask_structures}
    train: {...}                  # gazeprep.train.loop.TrainConfig

``tiny`` presets use small widths, 48-64 px inputs and random init so they train on a CPU in
seconds; ``default`` presets are the papers' settings. Backbone weights are never downloaded: give a
local file with ``model.weights`` (loaded with ``torch.load(..., weights_only=True)``).

The spec types, the registry (:data:`MODELS`, a :class:`gazeprep.registry.Registry`) and the
functions live in :mod:`gazeprep.train.models.registry`; the built-in models register when
:mod:`gazeprep.train.models.zoo` is imported, which this ``__init__`` does. To add a model, write
its module here and one ``register(ModelSpec(...))`` in ``zoo`` (or in your own module).
"""

from __future__ import annotations

from gazeprep.train.models import zoo  # noqa: F401 - registers the built-in models
from gazeprep.train.models.registry import (
    EGD_CLASSES,
    MODELS,
    REFLACX_LABELS,
    ModelInputs,
    ModelSpec,
    get_model,
    get_objective,
    list_models,
    register,
    resolve_config,
    spec_of,
)

__all__ = [
    "EGD_CLASSES",
    "MODELS",
    "REFLACX_LABELS",
    "ModelInputs",
    "ModelSpec",
    "get_model",
    "get_objective",
    "list_models",
    "register",
    "resolve_config",
    "spec_of",
]
