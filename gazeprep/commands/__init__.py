"""CLI command modules; each exposes ``register(app: typer.Typer) -> None``.

This module holds what the command modules share so that every command spells the same thing the
same way (issue 12, one vocabulary):

==================  ===========================================================================
``--images``        the MIMIC-CXR(-JPG) root (hidden old spellings: ``--mimic-root``, ``--images-root``)
``--quiet``         no progress bars (hidden old spelling: ``--progress/--no-progress``)
``--preset NAME``   a named preset; ``--config`` is always a YAML file
``--model FOLDER``  a model folder written by a train command (hidden old: ``--model-dir``);
                    ``train --arch NAME`` names the architecture to train (hidden old: ``--model``)
``--out``           the output; a folder unless the command writes one file
``--device``        ``auto|cpu|cuda``; ``--executor`` ``local|ray``
==================  ===========================================================================

Usage mistakes raise :class:`typer.BadParameter` (exit 2, click's usage message); domain problems
raise :class:`~gazeprep.errors.GazeprepError` (exit 1). Commands that need the ``[ml]`` extra call
:func:`require_ml` before importing torch code.
"""

from __future__ import annotations

import importlib
import sys
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")


class Device(str, Enum):
    """Where torch runs: ``auto`` picks CUDA when available, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Executor(str, Enum):
    """How cases are spread: a local process/thread pool, or Ray (one machine or a cluster)."""

    local = "local"
    ray = "ray"


def current_context() -> Any:
    """The click context of the command being run (None outside one); usage errors raised in a command
    body carry it so that click prints the command's usage line and ``--help`` pointer."""
    for name in ("typer._click.globals", "click.globals"):
        try:
            return importlib.import_module(name).get_current_context(silent=True)
        except ImportError:
            continue
    return None


def usage_error(message: str, option: str) -> Exception:
    """A usage error (exit 2) about ``option`` raised from a command body: ``Invalid value for '--x': ...``."""
    return typer.BadParameter(message, ctx=current_context(), param_hint=f"'{option}'")


def missing_option(option: str) -> Exception:
    """A usage error (exit 2) ``Missing option '--x'`` for an option required only when its hidden old
    spelling is not given either."""
    ctx = current_context()
    params = ctx.command.params if ctx is not None else []
    param = next((p for p in params if option in getattr(p, "opts", ())), None)
    missing = getattr(sys.modules[typer.BadParameter.__module__], "MissingParameter", None)
    if param is None or missing is None:
        return typer.BadParameter("this option is required", ctx=ctx, param_hint=f"'{option}'")
    return missing(ctx=ctx, param=param)


def known_dataset(value: str | None) -> str | None:
    """Option callback: a registered dataset or an existing definition file (``*.yaml``/``*.yml``,
    read by the command), else a usage error listing the registered names."""
    if value is None:
        return value
    from gazeprep.datasets import list_datasets
    from gazeprep.datasets.registry import is_definition_path

    if is_definition_path(value):
        if not Path(value).is_file():
            raise typer.BadParameter(f"dataset definition file {value!r} not found")
        return value

    known = list_datasets()
    if value not in known:
        raise typer.BadParameter(f"unknown dataset {value!r}; known datasets: {', '.join(known)}")
    return value


def release_root(root: Path | None, definition: Path | None, dataset: str, quiet: bool) -> Path:
    """``--root``; else the folder of the dataset's definition file (a declared dataset); else the
    bundled synthetic sample data of ``dataset``. Says on stderr which default it took."""
    from gazeprep.paths import sample_data_dir

    if root is not None:
        return root
    if definition is not None:
        if not quiet:
            typer.echo(f"no --root given: using the definition's folder {definition.parent}", err=True)
        return definition.parent
    root = sample_data_dir() / dataset
    if not quiet:
        typer.echo(f"no --root given: using the bundled synthetic sample data in {root}", err=True)
    return root


def out_folder(value: Path | None) -> Path | None:
    """Option callback for an ``--out`` that names a folder: an existing regular file is a usage error."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{str(value)!r} is an existing file; --out names a folder")
    return value


def out_file(value: Path | None) -> Path | None:
    """Option callback for an output that names one file: an existing folder is a usage error."""
    if value is not None and value.is_dir():
        raise typer.BadParameter(f"{str(value)!r} is a folder; this option names a file")
    return value


def merge_alias(value: T | None, old_value: T | None, name: str, old_name: str) -> T | None:
    """The value of option ``name`` given either as itself or as its hidden old spelling ``old_name``.

    Giving both with different values is a usage error (exit 2).
    """
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise usage_error(f"give {name} once ({old_name} is its old spelling)", old_name)
    return old_value


def show_progress(quiet: bool, progress: bool | None) -> bool:
    """Progress bars on unless ``--quiet`` or the hidden old ``--no-progress`` was given."""
    return not quiet and progress is not False


# The option factories below return typer's OptionInfo but are annotated ``Any``, as typer.Option itself
# is: an OptionInfo is the *default value* of a parameter typed ``bool``, ``Path | None``, ...


def images_option(help: str) -> Any:
    """``--images``: the MIMIC-CXR(-JPG) root."""
    return typer.Option(None, "--images", help=help)


def hidden_alias(*decls: str) -> Any:
    """A hidden, old spelling of an option (still parsed, not shown in ``--help``)."""
    return typer.Option(None, *decls, hidden=True)


def quiet_option() -> Any:
    """``--quiet``: no progress bars."""
    return typer.Option(False, "--quiet", help="No progress bars.")


def progress_alias() -> Any:
    """The hidden old ``--progress/--no-progress`` (``--quiet`` replaces it)."""
    return typer.Option(None, "--progress/--no-progress", hidden=True)


def require_ml(command: str, *modules: str) -> None:
    """Fail with one line naming the ``[ml]`` extra when torch (or ``modules``) is not installed.

    Parameters
    ----------
    command:
        The command as typed, e.g. ``"gazeprep train"``; it starts the message.
    modules:
        Further modules of the extra the command imports (e.g. ``"segment_anything"``).
    """
    from gazeprep._optional import require

    require("torch", "ml", command)
    # segment_anything, timm, ... import torchvision, which fails on the CPU torch build unless
    # its operator schemas are defined first
    from gazeprep._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    for module in modules:
        require(module, "ml", command)
