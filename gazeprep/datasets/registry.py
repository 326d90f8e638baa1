"""The dataset registry: every dataset gazeprep reads is an adapter registered by name.

A third dataset is either

* one module with a ``@register_dataset`` adapter class (see :mod:`gazeprep.datasets.base`;
  importing the module registers it), or
* one YAML definition file read by the generic adapter (:mod:`gazeprep.datasets.declared`):
  :func:`declare` (or ``--dataset path/to/dataset.yaml`` on the command line) loads it and registers
  the dataset under the name the file gives.

The rest of gazeprep asks the adapter, by name, what it needs to know about a dataset (its default
recipe, :func:`transcript_style`) instead of testing the name. Recipes name their dataset by
registry name (:func:`recipe_dataset_problem`); the reserved name :data:`DECLARED` in a recipe
matches any declared dataset, so one generic recipe serves every YAML-declared collection.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from gazeprep.datasets.base import DatasetAdapter, TranscriptStyle
from gazeprep.datasets.declared import DeclaredAdapter, load_definition
from gazeprep.errors import GazeprepError
from gazeprep.registry import Registry, RegistryError

#: modules holding the built-in adapters (imported on first lookup)
BUILTIN_MODULES = ("gazeprep.datasets.reflacx", "gazeprep.datasets.egd", "gazeprep.datasets.mimic")

#: A recipe's ``dataset`` that matches every dataset declared in a YAML file (never an adapter's name).
DECLARED = "declared"

#: Suffixes of a dataset definition file (``--dataset`` takes a registered name or such a path).
DEFINITION_SUFFIXES = (".yaml", ".yml")


def _load_builtins() -> None:
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)


#: name -> adapter instance
DATASETS: Registry[DatasetAdapter] = Registry("dataset", loader=_load_builtins)


def register_adapter(adapter: DatasetAdapter) -> DatasetAdapter:
    """Register an adapter instance under its ``name`` (:class:`RegistryError` on a taken name)."""
    if adapter.name == DECLARED:
        raise RegistryError(
            f"{DECLARED!r} is reserved (recipes use it for any declared dataset); choose another dataset name"
        )
    return DATASETS.register(adapter.name, adapter)


def register_dataset(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: register an adapter class under its ``name`` (one instance is kept).

    Registering a class of the same module and name again replaces it (a module reloaded); any other
    adapter already holding the name is a :class:`RegistryError`.
    """
    if not cls.name:
        raise RegistryError(f"{cls.__name__} has no dataset name")
    existing = DATASETS.peek(cls.name)
    if existing is not None:
        old = type(existing)
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RegistryError(f"dataset {cls.name!r} is already registered (by {old.__module__}.{old.__qualname__})")
        DATASETS.unregister(cls.name)
    register_adapter(cls())
    return cls


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered as ``name``; a one-line GazeprepError listing the known names otherwise."""
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets (declared ones included once loaded)."""
    return DATASETS.names()


def is_definition_path(value: str | Path) -> bool:
    """True when ``value`` names a dataset definition file (ends in ``.yaml`` or ``.yml``)."""
    return str(value).lower().endswith(DEFINITION_SUFFIXES)


def declare(path: str | Path) -> DeclaredAdapter:
    """Load the dataset definition at ``path`` and register it under its ``name``.

    Loading the same file again replaces the earlier registration (the file may have changed); a name
    already taken by another adapter or by another definition file is a :class:`RegistryError`.

    Raises
    ------
    GazeprepError
        The file is missing or not a valid definition (one line naming the file and the field), or
        its name is taken.
    """
    adapter = DeclaredAdapter(load_definition(path))
    existing = DATASETS.peek(adapter.name)
    if existing is not None:
        same = isinstance(existing, DeclaredAdapter) and existing.definition_path == adapter.definition_path
        if not same:
            by = existing.definition_path if isinstance(existing, DeclaredAdapter) else "a built-in or plugin adapter"
            raise RegistryError(
                f"{adapter.definition_path}: name: dataset {adapter.name!r} is already registered (by {by})"
            )
        DATASETS.unregister(adapter.name)
    register_adapter(adapter)
    return adapter


def resolve_dataset(name_or_path: str | Path) -> DatasetAdapter:
    """The adapter for a registered name, or for a definition file (:func:`declare`) when
    ``name_or_path`` ends in ``.yaml``/``.yml``."""
    if is_definition_path(name_or_path):
        return declare(name_or_path)
    return get_adapter(str(name_or_path))


def transcript_style(dataset: str) -> TranscriptStyle:
    """How the timed words of ``dataset`` read (its adapter's ``transcript``).

    Raises
    ------
    GazeprepError
        ``dataset`` is not registered, or its adapter declares no transcript.
    """
    style = get_adapter(dataset).transcript
    if style is None:
        raise GazeprepError(
            f"dataset {dataset!r} declares no transcript style, so its words cannot be read as sentences"
        )
    return style


def recipe_dataset_problem(name: str) -> str | None:
    """Why a recipe cannot name ``name`` as its dataset (None when it can): a registered dataset, or
    :data:`DECLARED` for any declared one."""
    if name == DECLARED or name in DATASETS:
        return None
    return (
        f"unknown dataset {name!r}; known datasets: {', '.join([DECLARED, *list_datasets()])} "
        f"({DECLARED!r}: any dataset declared in a YAML file; a declared dataset's own name is known "
        "once its file is loaded, e.g. by build-heatmaps --dataset path/to/dataset.yaml)"
    )


def recipe_fits(recipe_dataset: str, dataset: str) -> bool:
    """Whether a recipe for ``recipe_dataset`` may be built on the registered ``dataset``: the same
    name, or :data:`DECLARED` and a declared dataset."""
    if recipe_dataset == dataset:
        return True
    return recipe_dataset == DECLARED and isinstance(DATASETS.peek(dataset), DeclaredAdapter)
