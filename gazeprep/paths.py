"""Path helpers: data-derived names kept inside their output folder, and where the shipped rules,
recipes and sample data of this installation are.

Overrides of the shipped data (explicit argument > environment variable > shipped data):

- ``GAZEPREP_RECIPES_DIR``: a folder of recipes used instead of the shipped ``pipelines/``;
- ``GAZEPREP_RULES_DIR``: a rules folder used instead of the shipped ``rules/``.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from gazeprep.errors import GazeprepError

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def safe_component(name: str) -> str:
    """Return ``name`` if it is safe to use as one path component, else raise.

    Ids read from data files (case ids, dicom ids) become file names; a value such as ``../x`` or
    ``/etc`` must never escape the output folder.
    """
    if not isinstance(name, str) or not _SAFE_COMPONENT.match(name) or name in {".", ".."}:
        raise GazeprepError(f"unsafe identifier for a file name: {name!r}")
    return name


def safe_join(root: str | Path, *parts: str) -> Path:
    """Join ``parts`` under ``root`` and check that the result stays inside ``root``.

    Parameters
    ----------
    root:
        The folder that must contain the result.
    parts:
        Relative path components, possibly read from data (e.g. the ``image`` column of REFLACX).

    Raises
    ------
    GazeprepError
        If a part is absolute or the resolved path leaves ``root``.
    """
    base = Path(root).resolve()
    candidate = base
    for part in parts:
        p = Path(part)
        if p.is_absolute():
            raise GazeprepError(f"absolute path from data is not allowed: {part!r}")
        candidate = candidate / p
    resolved = candidate.resolve()
    if resolved != base and base not in resolved.parents:
        raise GazeprepError(f"path {'/'.join(parts)!r} leaves its folder {str(base)!r}")
    return resolved


def package_root() -> Path:
    """The folder above the ``gazeprep`` package: the repository root in a checkout (or an editable
    install), ``site-packages`` in a regular install."""
    return Path(__file__).resolve().parent.parent


# --- shipped data (rules/ and pipelines/) -------------------------------------------------------
#
# rules/ and pipelines/ are top-level folders of the repository. A wheel carries them as package data
# under ``gazeprep/_data/{rules,pipelines}`` (pyproject.toml maps the subpackages
# ``gazeprep._data.rules`` and ``gazeprep._data.pipelines`` onto the top-level folders). A checkout or
# an editable install reads the top-level folders themselves, so an edit there is seen at once.

RECIPES_ENV = "GAZEPREP_RECIPES_DIR"
"""Environment variable naming a folder of recipe files (``<name>.yaml``) used instead of the shipped
``pipelines/``."""

RULES_ENV = "GAZEPREP_RULES_DIR"
"""Environment variable naming a rules folder (same layout as the shipped ``rules/``: ``labels.yaml``,
``mention/``, ``unmention/``, ``negation/``, ...) used instead of the shipped one."""

_SHIPPED = ("rules", "pipelines")


def _is_checkout(root: Path) -> bool:
    """True when ``root`` is this project's source tree (not a ``site-packages`` that happens to hold a
    ``rules`` or ``pipelines`` folder of some other distribution)."""
    return (root / "pyproject.toml").is_file() and (root / "gazeprep" / "__init__.py").is_file()


def shipped_data_dir(kind: str) -> Path:
    """The folder of shipped data ``kind`` (``"rules"`` or ``"pipelines"``) of this installation.

    Looks first in the package data of an installed wheel (``importlib.resources``), then in the
    source checkout this module was imported from. Environment overrides are not applied here (see
    :func:`default_rules_dir`, :func:`default_pipelines_dir`).

    Raises
    ------
    GazeprepError
        If this installation carries neither (a broken install, or a zipped one that cannot be read
        as folders).
    """
    if kind not in _SHIPPED:
        raise ValueError(f"kind must be one of {_SHIPPED}, got {kind!r}")
    data = resources.files("gazeprep._data").joinpath(kind)
    if isinstance(data, Path) and data.is_dir():
        return data
    root = package_root()
    if _is_checkout(root) and (root / kind).is_dir():
        return root / kind
    env = RULES_ENV if kind == "rules" else RECIPES_ENV
    raise GazeprepError(
        f"this gazeprep installation carries no {kind}/ folder (reinstall it, or set {env} to a {kind} folder)"
    )


def _resolve_dir(explicit: str | Path | None, env: str, kind: str) -> Path:
    """explicit argument > environment variable > shipped data."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit)
    value = os.environ.get(env, "").strip()
    if value:
        d = Path(value).expanduser()
        if not d.is_dir():
            raise GazeprepError(f"{env}={value!r}: not a folder")
        return d
    return shipped_data_dir(kind)


def default_pipelines_dir(pipelines_dir: str | Path | None = None) -> Path:
    """The folder of recipes (``<name>.yaml``).

    Resolution: ``pipelines_dir`` when given, else the folder named by ``$GAZEPREP_RECIPES_DIR``
    (which replaces the shipped recipes: copy the shipped folder to start from them), else the shipped
    ``pipelines/``. A recipe given to :func:`gazeprep.recipes.load_recipe` as a path to a YAML file is
    read from that path whatever this returns.

    Raises
    ------
    GazeprepError
        If ``$GAZEPREP_RECIPES_DIR`` is set but is not a folder.
    """
    return _resolve_dir(pipelines_dir, RECIPES_ENV, "pipelines")


def default_rules_dir(rules_dir: str | Path | None = None) -> Path:
    """The rules folder of the report labeler, the label map and the keyword sets.

    Resolution: ``rules_dir`` when given, else the folder named by ``$GAZEPREP_RULES_DIR`` (a complete
    rules folder that replaces the shipped one), else the shipped ``rules/``.

    Raises
    ------
    GazeprepError
        If ``$GAZEPREP_RULES_DIR`` is set but is not a folder.
    """
    return _resolve_dir(rules_dir, RULES_ENV, "rules")


def bundled_sample_data() -> Path | None:
    """The bundled synthetic releases (``sample_data/{reflacx,egd-cxr,mimic-cxr}``) of a source
    checkout, or ``None`` in an installation without them (a wheel does not carry them)."""
    root = package_root()
    d = root / "sample_data"
    return d if _is_checkout(root) and d.is_dir() else None


def sample_data_dir(flag: str = "--root") -> Path:
    """The bundled synthetic releases, for commands whose data folder defaults to them.

    Parameters
    ----------
    flag:
        The option the user should pass instead, named in the error.

    Raises
    ------
    GazeprepError
        In an installation without sample data (any install from a wheel): one line asking for ``flag``.
    """
    d = bundled_sample_data()
    if d is None:
        raise GazeprepError(
            f"no {flag} given and no bundled sample data in this installation "
            f"(only a source checkout has sample_data/); pass {flag}"
        )
    return d
