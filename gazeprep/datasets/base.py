"""What every dataset adapter returns: a :class:`Release` (case list, labels) and per-case :class:`CaseData`.

The build pipeline calls, for any registered dataset::

    adapter = get_adapter("reflacx")
    release = adapter.open(root, gaze_samples=False)
    release.cases, release.case_labels, release.rejects
    data = release.read_case(case_id)      # in forked worker processes

Data problems never raise from :meth:`Release.read_case`: they come back as ``rejects`` rows (see
:func:`gazeprep.schema.reject`) and the affected rows or tables are left out. Whole-release
problems (missing root, missing or malformed metadata file) raise
:class:`~gazeprep.errors.InputFormatError` from :meth:`DatasetAdapter.open`.

Reject reasons end with what was done about it: ``row dropped``, ``case skipped`` (all tables of
the case are empty), or ``<tables> left empty`` (the rest of the case is kept).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from gazeprep import schema
from gazeprep.errors import GazeprepError, InputFormatError, StorageError

CASE_SKIPPED = "case skipped"
ROW_DROPPED = "row dropped"

_NO_SPACE_BEFORE = frozenset({".", ","})
_SENTENCE_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")  # a period not between two digits ("3.5 cm")


@dataclass(frozen=True)
class TranscriptStyle:
    """How a dataset's timed ``words`` rows read, for the text stage (sentences and offsets).

    kind:
        ``tokens``: one row per token with punctuation as its own token (REFLACX
        ``timestamps_transcription.csv``); a sentence ends at a ``'.'`` token and the tokens, joined
        with spaces but none before ``.`` and ``,``, rebuild the report text exactly (a mismatch is
        reported). ``phrases``: one row per transcript phrase with punctuation attached (EGD-CXR
        ``transcript.json``); a phrase holding a sentence period (not between two digits) ends its
        sentence and phrases join with single spaces.
    words_file:
        The file the words come from, named in the text stage's rejects rows; ``{case_id}`` in it
        stands for the case's id (see :meth:`words_file_for`).
    report_file:
        The file the report text comes from, named in those rows (``{case_id}`` likewise).
    """

    kind: Literal["tokens", "phrases"]
    words_file: str
    report_file: str

    def ends_sentence(self, word: str | None) -> bool:
        """Whether the words row ``word`` ends a sentence."""
        if self.kind == "tokens":
            return word == "."
        return bool(_SENTENCE_PERIOD.search(word or ""))

    def join(self, words: Sequence[str]) -> str:
        """The report text the words stand for (see ``kind``)."""
        if self.kind == "phrases":
            return " ".join(words)
        parts: list[str] = []
        for tok in words:
            if parts and tok not in _NO_SPACE_BEFORE:
                parts.append(" ")
            parts.append(tok)
        return "".join(parts)

    def words_file_for(self, case_id: str) -> str:
        """``words_file`` of one case."""
        return self.words_file.replace("{case_id}", case_id)

    def report_file_for(self, case_id: str) -> str:
        """``report_file`` of one case."""
        return self.report_file.replace("{case_id}", case_id)

    @property
    def words_rebuild_report(self) -> bool:
        """Whether joined words must equal the report text (token transcripts)."""
        return self.kind == "tokens"


def build_table(name: str, n: int, values: dict[str, Any]) -> pl.DataFrame:
    """A frame of table ``name`` with ``n`` rows, built column by column (no query engine: the
    per-case hot path stays at a few microseconds per column).

    ``values`` maps column -> polars Series, numpy array, list, or a scalar broadcast to ``n`` rows;
    absent columns are null. Every column is cast to the schema dtype.
    """
    cols = []
    for col, dtype in schema.TABLES[name].items():
        v = values.get(col)
        if isinstance(v, pl.Series):
            s = v.alias(col)
        elif isinstance(v, (np.ndarray, list)):
            s = pl.Series(col, v)
        else:  # scalar or None: one value repeated (no Python list of n items)
            one = pl.Series(col, [v], dtype=dtype)
            s = one.new_from_index(0, n) if n else one.clear()
        if s.dtype != dtype:
            s = s.cast(dtype)
        cols.append(s)
    return pl.DataFrame(cols)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a release, as its adapter lists it (:meth:`DatasetAdapter.images`).

    ``image_id``: the MIMIC ``dicom_id`` (one image read several times is listed once);
    ``image_path``: the image as the release names it, relative to the MIMIC-CXR root
    (:func:`gazeprep.datasets.images.resolve_image` finds the file); ``subject_id`` for
    subject-disjoint splits; ``source_file`` (relative to the release root) and ``source_row``
    (1-based data row) name where the release lists it, for rejects rows.
    """

    image_id: str
    image_path: str
    subject_id: str | None = None
    source_file: str | None = None
    source_row: int | None = None


@dataclass
class ImageListing:
    """The images of a release (:meth:`DatasetAdapter.images`): ``images`` in release order, and
    ``rejects`` rows (stage ``ingest``) for listing rows that were dropped."""

    images: list[ImageRecord]
    rejects: list[dict] = field(default_factory=list)


@dataclass
class CaseData:
    """Per-case canonical tables (name -> frame conforming to :data:`gazeprep.schema.TABLES`)."""

    case_id: str
    tables: dict[str, pl.DataFrame]
    rejects: list[dict] = field(default_factory=list)


class Release:
    """An opened dataset release.

    Attributes
    ----------
    dataset:
        Registered dataset name.
    root:
        The release folder.
    cases:
        Table ``cases`` (all cases, discarded ones included).
    case_labels:
        Table ``case_labels``.
    rejects:
        ``rejects`` rows found while opening (bad metadata rows, calibration rows, ...).
    tables:
        Names of the per-case tables :meth:`read_case` returns for this release.
    stats:
        Counters (e.g. ``calibration_rows``) for reports and tests.
    """

    dataset: str = ""
    tables: tuple[str, ...] = ()

    def __init__(self, root: Path):
        self.root = Path(root).absolute()  # absolute (symlinks kept) so that rel() works for every path built from it
        self.cases: pl.DataFrame = schema.empty("cases")
        self.case_labels: pl.DataFrame = schema.empty("case_labels")
        self.rejects: list[dict] = []
        self.stats: dict[str, int] = {}

    # ---- helpers shared by adapters -------------------------------------------------------
    def rel(self, path: Path) -> str:
        """``path`` relative to the release root, as a posix string (used in rejects and tables)."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def reject(self, case_id: str | None, file: Path | str | None, row: int | None, reason: str) -> dict:
        """A rejects row of stage ``ingest`` for this dataset."""
        f = self.rel(file) if isinstance(file, Path) else file
        return schema.reject(self.dataset, case_id, "ingest", f, row, reason)

    def empty_case(self, case_id: str, rejects: list[dict]) -> CaseData:
        """The CaseData of a skipped case: every table empty."""
        return CaseData(case_id, {t: schema.empty(t) for t in self.tables}, rejects)

    def case_ids(self) -> list[str]:
        """All case ids in ``cases`` order."""
        return self.cases["case_id"].to_list()

    def read_case(self, case_id: str) -> CaseData:
        """Per-case canonical tables of ``case_id``.

        Raises GazeprepError only for an id that is not in ``cases``. Data problems come back as
        rejects; an error escaping the adapter's reader on malformed data (undecodable file, path
        leaving the root, a parser error) skips the case with a rejects row naming it.

        I/O faults are not data problems and propagate: an :class:`OSError` carrying an ``errno``
        (EACCES, EIO, ENOSPC, a file that vanished after it was listed) and
        :class:`~gazeprep.errors.StorageError`. The build stops on them instead of recording a reject.
        """
        self._check_known(case_id)
        try:
            return self._read_case(case_id)
        except StorageError:
            raise
        except OSError as exc:
            if exc.errno is not None:  # an I/O fault, see above
                raise
            return self._skip_on_error(case_id, exc)
        except (GazeprepError, ValueError, pl.exceptions.PolarsError) as exc:
            return self._skip_on_error(case_id, exc)

    def _skip_on_error(self, case_id: str, exc: BaseException) -> CaseData:
        """The skipped case for an error on malformed data, with a rejects row naming the file."""
        path = getattr(exc, "path", None) or getattr(exc, "filename", None)
        msg = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return self.empty_case(
            case_id,
            [self.reject(case_id, Path(path) if path else None, getattr(exc, "row", None), f"{msg}; {CASE_SKIPPED}")],
        )

    def _read_case(self, case_id: str) -> CaseData:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_known(self, case_id: str) -> None:
        if case_id not in self._index:
            raise GazeprepError(f"{self.dataset}: unknown case id {case_id!r}")

    @property
    def _index(self) -> dict[str, Any]:
        idx = self.__dict__.get("_case_index")
        if idx is None:
            idx = {c: i for i, c in enumerate(self.cases["case_id"].to_list())}
            self.__dict__["_case_index"] = idx
        return idx


class DatasetAdapter:
    """Base class of a dataset adapter; subclasses set ``name``/``description`` and implement ``open``.

    What the rest of gazeprep asks the adapter instead of testing the dataset's name:

    ``default_recipe``
        The recipe ``build-heatmaps`` uses without ``--recipe`` (``None``: one must be given).
    ``transcript``
        How its ``words`` rows read (:class:`TranscriptStyle`); ``None`` for a dataset without
        timed words.

    Every adapter's ``open`` takes the same keywords:

    ``gaze_samples``
        Also read the raw gaze samples (large files).
    ``images_root``
        The MIMIC-CXR root: the folder holding ``files/pXX/p<subject>/s<study>/<dicom_id>.dcm``
        (MIMIC-CXR) or ``.jpg`` (MIMIC-CXR-JPG, with its ``mimic-cxr-2.0.0-*.csv.gz`` tables), the
        ``--images`` option of the CLI. Adapters use it for what their release lacks (EGD-CXR: the
        image sizes; all: the MIMIC split and CheXpert/NegBio labels when its tables are there) and
        ignore it otherwise. ``mimic_root`` is accepted as an old name of the same option.
    """

    # class attributes of a built-in adapter; a declared dataset's adapter sets them per instance
    name: str = ""
    description: str = ""
    default_recipe: str | None = None
    transcript: TranscriptStyle | None = None
    #: ``source`` of the ``masks`` rows of the masks its release ships (see :meth:`mask_files`)
    mask_source: str = "release"

    def open(
        self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None, **kwargs: Any
    ) -> Release:  # pragma: no cover
        raise NotImplementedError

    def images_option(self, images_root: Path | str | None, kwargs: dict[str, Any]) -> Path | None:
        """``images_root`` (or its old name ``mimic_root``, popped from ``kwargs``) as a Path.

        Raises GazeprepError when both names are given with different folders, when the folder
        does not exist, or when ``kwargs`` holds any other (unknown) option.
        """
        old = kwargs.pop("mimic_root", None)
        if kwargs:
            raise GazeprepError(f"dataset {self.name!r} does not take the option(s) {sorted(kwargs)}")
        if old is not None and images_root is not None and Path(old) != Path(images_root):
            raise GazeprepError(f"two MIMIC-CXR roots given: images_root={str(images_root)!r}, mimic_root={str(old)!r}")
        chosen = images_root if images_root is not None else old
        if chosen is None:
            return None
        p = Path(chosen)
        if not p.is_dir():
            raise GazeprepError(f"MIMIC-CXR images folder not found: {p}")
        return p

    def images(self, root: Path, *, images_root: Path | None = None) -> ImageListing:
        """The distinct images of the release at ``root`` (the anatomy stage segments each once).

        This default opens the release and lists the ``cases`` rows with an ``image_path``, first
        row of each ``image_id`` (no source row). Adapters whose release names its images in one
        table override it with a cheaper read of that table.

        Raises
        ------
        GazeprepError
            The release cannot be opened, or none of its cases names an image file.
        """
        release = self.open(root, images_root=images_root)
        cases = release.cases.filter(pl.col("image_path").is_not_null() & pl.col("image_id").is_not_null())
        if cases.height == 0:
            raise GazeprepError(f"dataset {self.name!r}: no case of {root} names an image file (column image_path)")
        seen: dict[str, ImageRecord] = {}
        for r in cases.select("image_id", "image_path", "subject_id").iter_rows(named=True):
            if r["image_id"] not in seen:
                sub = None if r["subject_id"] is None else str(r["subject_id"])
                seen[r["image_id"]] = ImageRecord(r["image_id"], r["image_path"], sub)
        return ImageListing(list(seen.values()), list(release.rejects))

    def mask_files(self, root: Path, image_id: str) -> dict[str, Path]:
        """The anatomy mask files the release ships for ``image_id``: ``{structure: path}`` of the
        files that exist (structures without a file are absent; nothing is decoded).

        Raises
        ------
        GazeprepError
            The dataset ships no anatomy masks (this default), or ``image_id`` is not a plain name.
        """
        raise GazeprepError(f"dataset {self.name!r} ships no anatomy masks")

    @staticmethod
    def check_root(root: Path | str) -> Path:
        """Return ``root`` as a Path; raise InputFormatError if it is not an existing folder."""
        p = Path(root)
        if not p.exists():
            raise InputFormatError(p, "release folder not found")
        if not p.is_dir():
            raise InputFormatError(p, "release root is not a folder")
        return p
