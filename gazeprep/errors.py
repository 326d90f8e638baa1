"""Domain errors.

Every error a user can cause (bad input file, bad recipe, missing weights) is a
:class:`GazeprepError`. The CLI prints its message on one line and exits non-zero, without a
traceback. Messages name the file and, where there is one, the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class GazeprepError(Exception):
    """An error caused by the user's input or configuration, with a one-line message."""


class InputFormatError(GazeprepError):
    """A file does not follow its documented release format.

    Parameters
    ----------
    path:
        The offending file.
    message:
        What is wrong.
    row:
        1-based data row (header excluded) when the problem is in one row.
    column:
        The column name when known.
    """

    def __init__(self, path: str | Path, message: str, row: int | None = None, column: str | None = None):
        self.path = str(path)
        self.row = row
        self.column = column
        self.reason = message
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")

    def __reduce__(
        self,
    ) -> tuple[type, tuple[Any, ...]]:  # picklable across worker processes (args holds the formatted message only)
        return (type(self), (self.path, self.reason, self.row, self.column))


class RecipeError(GazeprepError):
    """A recipe or rule file is invalid."""


class StorageError(GazeprepError):
    """An I/O fault (disk full, file too large, permission, device error, a file that vanished).

    Never a per-case reject: the build stops, names the file and commits nothing (no manifest).

    Parameters
    ----------
    path:
        The file or folder the operation failed on.
    message:
        What failed (usually ``os.strerror`` of the errno).
    """

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(
        self,
    ) -> tuple[type, tuple[Any, ...]]:  # picklable across worker processes (args holds the formatted message only)
        return (type(self), (self.path, self.reason))

    @classmethod
    def from_os_error(cls, exc: OSError, path: str | Path | None = None) -> StorageError:
        """Wrap an :class:`OSError`, naming its file (``exc.filename`` unless ``path`` is given)."""
        where = path if path is not None else (exc.filename if exc.filename is not None else "<unknown file>")
        return cls(where, exc.strerror or type(exc).__name__)


class LockedError(GazeprepError):
    """Another process holds the output folder's writer lock."""


class ExportReplacedError(GazeprepError):
    """An export was replaced (or removed) by another build while it was being read."""


class MissingExtraError(GazeprepError):
    """An optional dependency group (``pip install 'gazeprep[EXTRA]'``) is not installed."""
