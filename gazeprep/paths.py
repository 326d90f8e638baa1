"""Path helpers that keep data-derived names inside their output folder."""

from __future__ import annotations

import re
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
    """The repository root when running from a checkout (holds pipelines/, rules/, sample_data/)."""
    return Path(__file__).resolve().parent.parent


def default_pipelines_dir() -> Path:
    return package_root() / "pipelines"


def default_rules_dir() -> Path:
    return package_root() / "rules"


def sample_data_dir() -> Path:
    """The bundled synthetic releases (``sample_data/{reflacx,egd-cxr,mimic-cxr}``)."""
    return package_root() / "sample_data"
