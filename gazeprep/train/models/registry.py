"""The model registry: spec types, :data:`MODELS` and the functions that build from it.

A leaf of :mod:`gazeprep.train.models`: it imports no model module, so the built-in entries
(:mod:`gazeprep.train.models.zoo`) can import it to register themselves. The package ``__init__``
imports ``zoo``; Python runs a package's ``__init__`` before any of its modules, so every lookup
here already sees the built-in models without a loader importing ``zoo`` back (an import cycle).

A config is a dict with four sections, each optional::

    preset: default | tiny        # start from the model's preset, then apply the sections below
    model: {...}                  # keyword arguments of the model class
    loss:  {...}                  # keyword arguments of the objective
    data:  {size, targets, labels, augment, mask_structures}
    train: {...}                  # gazeprep.train.loop.TrainConfig
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from gazeprep.errors import GazeprepError
from gazeprep.registry import Registry
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


#: name -> model spec (the one registry type of gazeprep: the same one-line errors on duplicates
#: and on unknown names, listing the known ones, as datasets and metrics).
MODELS: Registry[ModelSpec] = Registry("model")


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` under ``spec.name`` and return it.

    Raises :class:`~gazeprep.registry.RegistryError` when the name is already registered.
    """
    return MODELS.register(spec.name, spec)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def spec_of(name: str) -> ModelSpec:
    """The spec registered as ``name``; a one-line :class:`~gazeprep.registry.RegistryError`
    listing the known models otherwise."""
    return MODELS.get(name)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


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
    base: dict[str, dict] = {"model": {}, "loss": {}, "data": {}, "train": {}}
    full = _merge(_merge(base, spec.presets[preset]), config)
    full["preset"] = preset
    full["name"] = name
    return full


def get_model(name: str, config: dict | None = None) -> nn.Module:
    """Build model ``name`` from its resolved config (see the module docstring)."""
    cfg = resolve_config(name, config)
    return spec_of(name).build_model(cfg["model"], cfg["data"])


def get_objective(name: str, config: dict | None = None) -> nn.Module:
    """Build the training objective (loss) of model ``name``."""
    cfg = resolve_config(name, config)
    return spec_of(name).build_objective(cfg["loss"])
