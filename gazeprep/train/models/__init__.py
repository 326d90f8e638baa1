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
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.text.labels import label_groups

EGD_CLASSES = ["normal", "chf", "pneumonia"]

#: Paper 004's ten labels in its list_labels order, as canonical ids of rules/labels.yaml (group
#: ``lanfredi2023``): the one label map, read from the rules, never a copy kept here.
REFLACX_LABELS = list(label_groups()["lanfredi2023"])


@dataclass(frozen=True)
class ModelInputs:
    """What a model trains on, checked against the export before any training
    (:func:`gazeprep.train.run.check_export`).

    ``dataset``: the release its paper trained on (``egd-cxr``, ``reflacx``); ``recipe``: the shipped
    recipe (``pipelines/``) whose export holds the targets of the model's default preset;
    ``multilabel``: labels are scored independently (sigmoid, any number present per case) rather
    than as one class per case (softmax; cases need exactly one positive label);
    ``maps_per_label``: one heatmap per label (004), so the targets default to the labels;
    ``needs_maps``: heatmaps are a training target (False for plain classifiers, whose maps are only
    evaluated). The targets and labels themselves come from the resolved config's ``data`` section.
    """

    dataset: str
    recipe: str
    multilabel: bool = False
    maps_per_label: bool = False
    needs_maps: bool = True


@dataclass
class ModelSpec:
    """One registry entry: builders, the paper it implements, its presets and declared inputs."""

    name: str
    paper: str
    summary: str
    build_model: Callable[[dict, dict], nn.Module]
    build_objective: Callable[[dict], nn.Module]
    presets: dict[str, dict] = field(default_factory=dict)
    inputs: ModelInputs | None = None


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Registered model names."""
    _load_builtin()
    return sorted(REGISTRY)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def spec_of(name: str) -> ModelSpec:
    _load_builtin()
    if name not in REGISTRY:
        raise GazeprepError(f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def resolve_config(name: str, config: dict | None = None) -> dict:
    """The full config of ``name``: its preset (``config['preset']``, default ``default``) with the
    sections of ``config`` merged over it."""
    spec = spec_of(name)
    config = dict(config or {})
    preset = config.pop("preset", "default")
    config.pop("name", None)
    if preset not in spec.presets:
        raise GazeprepError(f"model {name!r} has presets {sorted(spec.presets)}, not {preset!r}")
    unknown = set(config) - {"model", "loss", "data", "train"}
    if unknown:
        raise GazeprepError(f"unknown config sections {sorted(unknown)}; use model, loss, data, train")
    base = {"model": {}, "loss": {}, "data": {}, "train": {}}
    full = _merge(_merge(base, spec.presets[preset]), config)
    full["preset"] = preset
    full["name"] = name
    return full


def get_model(name: str, config: dict | None = None) -> nn.Module:
    """Build model ``name`` from its resolved config (see module docstring)."""
    cfg = resolve_config(name, config)
    return spec_of(name).build_model(cfg["model"], cfg["data"])


def get_objective(name: str, config: dict | None = None) -> nn.Module:
    """Build the training objective (loss) of model ``name``."""
    cfg = resolve_config(name, config)
    return spec_of(name).build_objective(cfg["loss"])


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from gazeprep.train.models import zoo  # noqa: F401 - registers the built-in models


__all__ = [
    "EGD_CLASSES",
    "REFLACX_LABELS",
    "ModelInputs",
    "ModelSpec",
    "REGISTRY",
    "get_model",
    "get_objective",
    "list_models",
    "register",
    "resolve_config",
    "spec_of",
]
