"""Domain errors.

Every error a user can cause (bad input file, bad recipe, missing weights) is a
:class:`GazeprepError`. The CLI prints its message on one line and exits non-zero, without a
traceback. Messages name the file and, where there is one, the row.
"""

from __future__ import annotations

from pathlib import Path


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


class RecipeError(GazeprepError):
    """A recipe or rule file is invalid."""
