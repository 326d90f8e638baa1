"""Registry of dataset adapters: a new dataset is one module with a ``@register_dataset`` class."""

from __future__ import annotations

import importlib

from gazeprep.datasets.base import DatasetAdapter
from gazeprep.errors import GazeprepError

_REGISTRY: dict[str, DatasetAdapter] = {}

#: modules holding the built-in adapters (imported on first lookup)
BUILTIN_MODULES = ("gazeprep.datasets.reflacx", "gazeprep.datasets.egd", "gazeprep.datasets.mimic")


def register_dataset(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: register an adapter class under its ``name`` (one instance is kept)."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no dataset name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise TypeError(f"dataset {cls.name!r} is already registered by {type(existing).__name__}")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_builtins() -> None:
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered as ``name``; GazeprepError listing the known names otherwise."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GazeprepError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}") from None


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets."""
    _load_builtins()
    return sorted(_REGISTRY)
