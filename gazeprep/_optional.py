"""Optional dependencies: one helper that turns a missing extra into a one-line error."""

from __future__ import annotations

import importlib
from types import ModuleType

from gazeprep.errors import MissingExtraError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it.

    Parameters
    ----------
    module:
        Dotted module name, e.g. ``"torch"``.
    extra:
        The ``pyproject.toml`` extra that installs it, e.g. ``"ml"``.
    feature:
        What the user asked for, e.g. ``"gazeprep train"``; it starts the message.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        raise MissingExtraError(
            f"{feature} needs the [{extra}] extra (module {missing!r} is not installed): "
            f"pip install 'gazeprep[{extra}]'"
        ) from None
