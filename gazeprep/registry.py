"""One registry type for everything gazeprep selects by name (datasets, metrics, models, ...).

A :class:`Registry` maps names to objects. Every registry behaves the same way:

* registering a name twice is an error (:class:`RegistryError`, naming the kind and the name);
* looking up an unknown name is an error listing the known names, in one line::

      unknown dataset 'reflax'; known datasets: egd-cxr, mimic-cxr, reflacx

* ``names()`` is sorted, so listings and messages are stable.

A registry may be given a ``loader``: a function run before every lookup or listing that imports the
modules holding the built-in entries (they register themselves when imported). The loader runs
every time; it must be cheap after the first call (a module import already done is a dictionary
lookup).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gazeprep.errors import GazeprepError

T = TypeVar("T")


class RegistryError(GazeprepError):
    """A name registered twice, or a name that is not registered (the message lists the known ones)."""


class Registry(Generic[T]):
    """Objects of one kind, by name.

    Parameters
    ----------
    kind:
        What the entries are, singular (``"dataset"``), used in messages.
    plural:
        The plural used in messages (default ``kind + "s"``).
    loader:
        Called (without arguments) before each lookup, membership test or listing; it imports the
        modules that register the built-in entries.
    """

    def __init__(self, kind: str, *, plural: str | None = None, loader: Callable[[], None] | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._loader = loader
        self._entries: dict[str, T] = {}

    def _load(self) -> None:
        if self._loader is not None:
            self._loader()

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name`` and return it.

        Raises
        ------
        RegistryError
            ``name`` is empty or not a string, or already registered.
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (plugins and tests that register temporary entries).

        Raises :class:`RegistryError` (listing the known names) when ``name`` is not registered.
        """
        if name not in self._entries:
            raise self._unknown(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises
        ------
        RegistryError
            ``name`` is not registered; the one-line message lists the known names.
        """
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise self._unknown(name) from None

    def peek(self, name: str) -> T | None:
        """The object registered as ``name``, or None, without running the loader (for code that
        registers entries, which may run while the loader imports it)."""
        return self._entries.get(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs sorted by name."""
        self._load()
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"

    def _unknown(self, name: object) -> RegistryError:
        known = ", ".join(sorted(self._entries)) or "none"
        return RegistryError(f"unknown {self.kind} {name!r}; known {self.plural}: {known}")
