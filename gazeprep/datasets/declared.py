"""Datasets declared in one YAML file: the generic adapter for a new gaze collection.

A researcher with fixations of readers looking at images writes one definition file that says
which files hold what and in which units (in the spirit of pymovements' dataset definitions), and
builds heatmaps with the same checks, rejects, resume and export as the built-in datasets::

    gazeprep build-heatmaps --dataset path/to/dataset.yaml --root <folder> [--recipe ...]

Definition (format version 1; unknown keys are rejected; every ``file`` is relative to the root
folder and may not leave it; see ``docs/datasets.md`` for a worked example)::

    schema_version: 1
    name: lab-gaze                   # the dataset's name (tables' dataset column, recipes, exports)
    description: one line            # optional
    default_recipe: generic-fixation-duration   # optional (this is the default)
    cases:                           # one row per case: one reading of one image
      file: cases.csv
      columns: {case_id: reading, image_id: image, image_width_px: width, image_height_px: height,
                image_path: file, subject_id: reader_no, split: split, reader: reader}  # case_id required
      labels: [effusion, nodule]     # optional: columns holding one number per case and label
      other_columns: [notes]         # optional: columns present in the file and not read
    images:                          # optional: image sizes when the cases file has no size columns
      sizes: {file: sizes.csv, columns: {image_id: image, width_px: w, height_px: h}}
      # or: folder: images           # <root>/images/<image_path>: sizes from the image headers
    screen:                          # optional; needed for positions in screen units
      width_px: 1920
      height_px: 1080
      width_cm: 52.7                 # with distance_cm: pixels per degree of visual angle
      height_cm: 29.6                # optional (square screen pixels assumed)
      distance_cm: 70
      image_area: fit                # or {left: 0, top: 0, width: 1920, height: 1080} (screen px)
    fixations:
      file: fixations/{case_id}.csv  # one file per case; or one file with a case_id column
      columns: {x: x, y: y, t_start: start, t_end: end}   # or duration: instead of t_end
      time_unit: ms                  # s (default), ms or us
      position_unit: px              # px: image pixels; screen: 0..1 of the screen width/height
      pixels_per_degree: 38.5        # optional (image pixels), else columns px_per_deg_x/_y, else screen
    words:                           # optional: timed transcript, same clock as the fixations
      file: words/{case_id}.csv
      columns: {word: word, t_start: start, t_end: end}
      style: tokens                  # tokens (punctuation separate) or phrases (attached)

Conventions. Positions become pixels of the original image, x = column and y = row from the top
left. ``position_unit: screen`` gives ``(u, v)`` in ``[0, 1]`` of the screen's width and height
(origin top left); the image was shown in ``screen.image_area``: ``fit`` is the largest area of the
image's aspect ratio centred on the screen. With the area's left/top edge at ``(L, T)`` screen
pixels and its size ``A_w x A_h``, an image of ``W x H`` pixels gets ``x = (u * S_w - L) * W / A_w``
and ``y = (v * S_h - T) * H / A_h`` (the area's edge is pixel coordinate 0, as in EGD-CXR's
mapping). Pixels per degree from the screen: one degree at the screen centre spans
``2 * distance_cm * tan(0.5 deg)`` centimetres, times the screen's pixels per centimetre, times the
image pixels per screen pixel (``W / A_w``; ``H / A_h`` for y).

Checks are the built-in datasets' (:mod:`gazeprep.datasets.csvio` column policy, finite values,
time order, positions far off the image): a bad row is a ``rejects`` row naming the file and its
1-based row and is dropped, a case without valid fixations is skipped, the cases file itself must be
readable (else the build stops with one line naming it).
"""

from __future__ import annotations

import math
import string
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Self

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gazeprep import schema
from gazeprep.datasets.base import (
    CASE_SKIPPED,
    ROW_DROPPED,
    CaseData,
    DatasetAdapter,
    Release,
    TranscriptStyle,
    build_table,
)
from gazeprep.datasets.checks import far_outside, time_problems
from gazeprep.datasets.csvio import CheckedTable, Col, read_checked_csv
from gazeprep.datasets.images import image_size
from gazeprep.errors import GazeprepError, InputFormatError
from gazeprep.paths import safe_component, safe_join

#: The recipe a declared dataset uses when its definition names none.
GENERIC_RECIPE = "generic-fixation-duration"
#: Seconds per unit of ``time_unit``.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
#: The placeholder of a per-case file pattern.
CASE_PLACEHOLDER = "case_id"

_NAME = r"^[a-z0-9][a-z0-9_\-]*$"


# ---- the definition (pydantic models) -----------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Columns(_Strict):
    """A mapping field -> CSV column; two fields may not read the same column (one check per column)."""

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        seen: dict[str, str] = {}
        for field_name, col in self.model_dump().items():
            if col is None:
                continue
            if col in seen:
                raise ValueError(f"fields {seen[col]} and {field_name} both name the column {col!r}")
            seen[col] = field_name
        return self


Column = Field(min_length=1)


def _check_file(pattern: str, *, per_case: bool) -> str:
    """A relative posix path (``{case_id}`` allowed when ``per_case``) that stays under the root."""
    fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    bad = [f for f in fields if f != CASE_PLACEHOLDER]
    if bad or (fields and not per_case):
        allowed = "the placeholder {case_id}" if per_case else "no placeholder"
        raise ValueError(f"{pattern!r}: only {allowed} is allowed in a file name")
    p = PurePosixPath(pattern.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"{pattern!r} must be a relative path inside the root folder (no '..', not absolute)")
    return pattern


class CasesColumns(_Columns):
    """Columns of the cases file (values: the CSV column names)."""

    case_id: str = Column
    image_id: str | None = Field(None, min_length=1)  # default: the case id
    image_path: str | None = Field(None, min_length=1)  # relative to images.folder
    image_width_px: str | None = Field(None, min_length=1)
    image_height_px: str | None = Field(None, min_length=1)
    subject_id: str | None = Field(None, min_length=1)  # an integer
    split: str | None = Field(None, min_length=1)
    reader: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _size_pair(self) -> Self:
        if (self.image_width_px is None) != (self.image_height_px is None):
            raise ValueError("give both image_width_px and image_height_px, or neither")
        return self


class CasesTable(_Strict):
    """The cases file: one row per case (one reading of one image)."""

    file: str
    columns: CasesColumns
    labels: tuple[str, ...] = ()
    other_columns: tuple[str, ...] = ()

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file(v, per_case=False)

    @model_validator(mode="after")
    def _labels(self) -> Self:
        named = {v for v in self.columns.model_dump().values() if v is not None}
        clash = [lab for lab in self.labels if lab in named]
        if clash or len(set(self.labels)) != len(self.labels):
            raise ValueError(
                f"labels: each label column once, and not a column of columns ({clash or list(self.labels)})"
            )
        return self


class SizeColumns(_Columns):
    image_id: str = Column
    width_px: str = Column
    height_px: str = Column


class ImageSizes(_Strict):
    """A CSV with one row per image and its size in pixels."""

    file: str
    columns: SizeColumns
    other_columns: tuple[str, ...] = ()

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file(v, per_case=False)


class Images(_Strict):
    """Where image sizes come from: a sizes CSV, or the image files (header only)."""

    folder: str | None = None
    sizes: ImageSizes | None = None

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str | None) -> str | None:
        return None if v is None else _check_file(v, per_case=False)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.folder is None) == (self.sizes is None):
            raise ValueError("give exactly one of folder (image files) and sizes (a CSV of image sizes)")
        return self


class ImageArea(_Strict):
    """Where the image was drawn on the screen, in screen pixels."""

    left: float
    top: float
    width: float = Field(gt=0)
    height: float = Field(gt=0)


class Screen(_Strict):
    """The display: its size in pixels and, for degrees of visual angle, in centimetres and distance."""

    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    width_cm: float | None = Field(None, gt=0)
    height_cm: float | None = Field(None, gt=0)
    distance_cm: float | None = Field(None, gt=0)
    image_area: Literal["fit"] | ImageArea = "fit"

    @model_validator(mode="after")
    def _geometry(self) -> Self:
        if (self.width_cm is None) != (self.distance_cm is None):
            raise ValueError("give width_cm and distance_cm together (pixels per degree need both)")
        if self.height_cm is not None and self.width_cm is None:
            raise ValueError("height_cm needs width_cm and distance_cm")
        return self

    def area(self, width: int, height: int) -> tuple[float, float, float, float]:
        """``(left, top, width, height)`` in screen pixels of a ``width x height`` image."""
        a = self.image_area
        if isinstance(a, ImageArea):
            return a.left, a.top, a.width, a.height
        s = min(self.width_px / width, self.height_px / height)
        aw, ah = width * s, height * s
        return (self.width_px - aw) / 2.0, (self.height_px - ah) / 2.0, aw, ah

    def px_per_deg(self, width: int, height: int) -> tuple[float, float] | None:
        """Image pixels per degree of visual angle (x, y) at the screen centre, or None without
        the physical size."""
        if self.width_cm is None or self.distance_cm is None:
            return None
        cm_per_deg = 2.0 * self.distance_cm * math.tan(math.radians(0.5))
        ppcm_x = self.width_px / self.width_cm
        ppcm_y = self.height_px / self.height_cm if self.height_cm is not None else ppcm_x
        _, _, aw, ah = self.area(width, height)
        return cm_per_deg * ppcm_x * width / aw, cm_per_deg * ppcm_y * height / ah


class _Timed(_Columns):
    case_id: str | None = Field(None, min_length=1)  # needed in a file holding every case
    t_start: str = Column
    t_end: str | None = Field(None, min_length=1)
    duration: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _end(self) -> Self:
        if (self.t_end is None) == (self.duration is None):
            raise ValueError("give exactly one of t_end and duration")
        return self


class FixationColumns(_Timed):
    x: str = Column
    y: str = Column
    px_per_deg_x: str | None = Field(None, min_length=1)
    px_per_deg_y: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _ppd_pair(self) -> Self:
        if (self.px_per_deg_x is None) != (self.px_per_deg_y is None):
            raise ValueError("give both px_per_deg_x and px_per_deg_y, or neither")
        return self


class WordColumns(_Timed):
    word: str = Column


def _check_pattern(file: str, case_column: str | None) -> None:
    per_case = "{" + CASE_PLACEHOLDER + "}" in file
    if per_case and case_column is not None:
        raise ValueError(f"file {file!r} holds one case per file: drop columns.case_id")
    if not per_case and case_column is None:
        raise ValueError(f"file {file!r} holds every case: give columns.case_id (or put {{case_id}} in the file name)")


class Fixations(_Strict):
    """Fixations: one file per case (``{case_id}`` in ``file``) or one file with a case id column."""

    file: str
    columns: FixationColumns
    time_unit: Literal["s", "ms", "us"] = "s"
    position_unit: Literal["px", "screen"] = "px"
    pixels_per_degree: float | None = Field(None, gt=0)
    other_columns: tuple[str, ...] = ()

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file(v, per_case=True)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_pattern(self.file, self.columns.case_id)
        if self.pixels_per_degree is not None and self.columns.px_per_deg_x is not None:
            raise ValueError("give pixels_per_degree or the columns px_per_deg_x/_y, not both")
        return self


class Words(_Strict):
    """Timed transcript words, on the fixations' clock."""

    file: str
    columns: WordColumns
    time_unit: Literal["s", "ms", "us"] = "s"
    style: Literal["tokens", "phrases"] = "tokens"
    other_columns: tuple[str, ...] = ()

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file(v, per_case=True)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_pattern(self.file, self.columns.case_id)
        return self


class Definition(_Strict):
    """A dataset definition file (see the module docstring)."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=_NAME, max_length=64)
    description: str = ""
    default_recipe: str | None = GENERIC_RECIPE
    cases: CasesTable
    images: Images | None = None
    screen: Screen | None = None
    fixations: Fixations
    words: Words | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v == "declared":
            raise ValueError("'declared' is reserved (recipes use it for any declared dataset); choose another name")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        cols = self.cases.columns
        has_size_cols = cols.image_width_px is not None
        if has_size_cols == (self.images is not None):
            raise ValueError(
                "image sizes: give cases.columns image_width_px/image_height_px, or an images section "
                "(sizes CSV or image folder), exactly one"
            )
        if self.images is not None and self.images.folder is not None and cols.image_path is None:
            raise ValueError("images.folder needs cases.columns.image_path (each case's image file)")
        if self.fixations.position_unit == "screen" and self.screen is None:
            raise ValueError("fixations.position_unit 'screen' needs a screen section (width_px, height_px)")
        return self


class LoadedDefinition:
    """A validated definition and the file it was read from (absolute)."""

    def __init__(self, definition: Definition, path: Path):
        self.definition = definition
        self.path = path


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    msg = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    return f"{loc}: {msg}"


def load_definition(path: str | Path) -> LoadedDefinition:
    """Read and validate a dataset definition file (``yaml.safe_load``, unknown keys rejected).

    Raises
    ------
    GazeprepError
        One line naming the file (and the first invalid field): missing file, not YAML, not a
        mapping, or an invalid definition.
    """
    p = Path(path).absolute()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GazeprepError(f"{p}: dataset definition not found") from None
    except IsADirectoryError:
        raise GazeprepError(f"{p}: is a folder, not a dataset definition file") from None
    except UnicodeDecodeError:
        raise GazeprepError(f"{p}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GazeprepError(f"{p}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise GazeprepError(f"{p}: a dataset definition must be a mapping (name, cases, fixations, ...)")
    try:
        return LoadedDefinition(Definition.model_validate(data), p)
    except ValidationError as exc:
        raise GazeprepError(f"{p}: {_one_line(exc)}") from None


# ---- the adapter ------------------------------------------------------------------------------


class DeclaredAdapter(DatasetAdapter):
    """The adapter of one declared dataset (its name, default recipe and transcript come from the file)."""

    def __init__(self, loaded: LoadedDefinition):
        d = loaded.definition
        self.definition = d
        self.definition_path = loaded.path
        self.name = d.name
        self.description = d.description or f"declared in {loaded.path}"
        self.default_recipe = d.default_recipe
        self.transcript = (
            TranscriptStyle(d.words.style, words_file=d.words.file, report_file=d.words.file) if d.words else None
        )

    def open(
        self, root: Path, *, gaze_samples: bool = False, images_root: Path | None = None, **kwargs: Any
    ) -> DeclaredRelease:
        """Open the collection under ``root`` (reads the cases file, image sizes and any file shared
        by all cases).

        ``images_root`` replaces ``<root>/<images.folder>`` as the folder the image files are read
        from (for sizes). A declared dataset has no raw gaze samples: ``gaze_samples=True`` is an error.
        """
        old = kwargs.pop("mimic_root", None)  # the old name of images_root (``ingest --images``)
        if kwargs:
            raise GazeprepError(f"dataset {self.name!r} does not take the option(s) {sorted(kwargs)}")
        if images_root is None:
            images_root = old
        if gaze_samples:
            raise GazeprepError(
                f"dataset {self.name!r} ({self.definition_path}) declares fixations only, no raw gaze samples "
                "(a recipe with render.source: gaze_samples cannot use it)"
            )
        return DeclaredRelease(self, self.check_root(root), images_root=images_root)


def _fixation_cols(f: Fixations) -> dict[str, Col]:
    c = f.columns
    cols: dict[str, Col] = {c.t_start: Col(), c.x: Col(), c.y: Col()}
    if c.t_end is not None:
        cols[c.t_end] = Col()
    if c.duration is not None:
        cols[c.duration] = Col(lo=0)
    if c.px_per_deg_x is not None:
        cols[c.px_per_deg_x] = Col(gt=0)
        cols[c.px_per_deg_y] = Col(gt=0)  # type: ignore[index]
    if c.case_id is not None:
        cols[c.case_id] = Col("str")
    return cols


def _word_cols(w: Words) -> dict[str, Col]:
    c = w.columns
    cols: dict[str, Col] = {c.word: Col("str"), c.t_start: Col()}
    if c.t_end is not None:
        cols[c.t_end] = Col()
    if c.duration is not None:
        cols[c.duration] = Col(lo=0)
    if c.case_id is not None:
        cols[c.case_id] = Col("str")
    return cols


def _section_name(section: Fixations | Words) -> str:
    return "fixations" if isinstance(section, Fixations) else "words"


#: the ``cases`` columns a declared collection fills, in order
_CASE_COLUMNS = (
    "dataset",
    "case_id",
    "image_id",
    "subject_id",
    "split",
    "image_path",
    "image_height_px",
    "image_width_px",
    "reader",
    "discarded",
)


def _case_id_problem(column: str, cid: str, seen: dict[str, int]) -> str | None:
    """Why ``cid`` (from the cases file's ``column``) cannot be a case id: not usable as a file name,
    or already read (``seen``: id -> its row); None when it can."""
    try:
        safe_component(cid)
    except GazeprepError:
        return f"column '{column}': {cid!r} cannot be a case id (letters, digits, '.', '_', '-'; not starting with '.', '_' or '-')"
    if cid in seen:
        return f"duplicate case id {cid!r} (first at row {seen[cid]})"
    return None


class DeclaredRelease(Release):
    """An opened declared collection (see the module docstring)."""

    def __init__(self, adapter: DeclaredAdapter, root: Path, *, images_root: Path | None = None):
        super().__init__(root)
        d = adapter.definition
        self.definition = d
        self.definition_path = adapter.definition_path
        self.dataset = d.name
        self.transcript = adapter.transcript
        self.tables = ("fixations",) + (("reports", "words") if d.words is not None else ())
        self._images_root = Path(images_root).absolute() if images_root is not None else None
        self._info: dict[str, tuple[int, int]] = {}  # case id -> (width, height)
        self._shared: dict[str, dict[str, pl.DataFrame]] = {}  # table -> case id -> rows of a shared file
        self._read_cases()
        if "{" + CASE_PLACEHOLDER + "}" not in d.fixations.file:
            self._shared["fixations"] = self._split_shared(d.fixations.file, _fixation_cols(d.fixations), d.fixations)
        if d.words is not None and "{" + CASE_PLACEHOLDER + "}" not in d.words.file:
            self._shared["words"] = self._split_shared(d.words.file, _word_cols(d.words), d.words)
        self.stats = {
            "cases": self.cases.height,
            "rejected_case_rows": sum(1 for r in self.rejects if r["case_id"] is None),
        }

    # ---- paths and files --------------------------------------------------------------------
    def _read_csv(self, path: Path, cols: dict[str, Col], other: tuple[str, ...], section: str) -> CheckedTable:
        """:func:`read_checked_csv` with the definition's ``other_columns``; an unexpected column's
        error says where to list it."""
        try:
            return read_checked_csv(path, cols, known=other)
        except InputFormatError as exc:
            if exc.column is None or exc.column in cols:
                raise
            hint = f"; or list it under {section}.other_columns in {self.definition_path.name}"
            raise InputFormatError(exc.path, exc.reason + hint, exc.row, exc.column) from None

    def _path(self, rel: str, case_id: str | None = None) -> Path:
        """``rel`` (with ``{case_id}`` filled) under the root; GazeprepError if it would leave it."""
        if case_id is not None:
            rel = rel.replace("{" + CASE_PLACEHOLDER + "}", safe_component(case_id))
        safe_join(self.root, rel)  # raises when the resolved path leaves the root (symlinks included)
        return self.root / rel

    # ---- open -------------------------------------------------------------------------------
    def _read_cases(self) -> None:
        """The cases file -> ``cases`` and ``case_labels`` (one row per declared label and case). A row
        with an unusable or duplicate id, or whose image size cannot be found, is a rejects row and
        skips its case; a problem with the file itself stops the open."""
        d = self.definition
        c = d.cases.columns
        path = self._path(d.cases.file)
        table = self._read_csv(path, self._case_rules(), d.cases.other_columns, "cases")
        for b in table.bad:
            self.rejects.append(self.reject(None, path, b.row, f"{b.reason}; {CASE_SKIPPED}"))
        sizes = self._size_table() if d.images is not None and d.images.sizes is not None else None
        rows: list[dict] = []
        labels: list[dict] = []
        seen: dict[str, int] = {}
        for rec in table.df.iter_rows(named=True):
            row = rec["source_row"]
            cid = rec[c.case_id].strip()
            problem = _case_id_problem(c.case_id, cid, seen)
            if problem is not None:
                self.rejects.append(self.reject(cid or None, path, row, f"{problem}; {CASE_SKIPPED}"))
                continue
            image_id = rec[c.image_id].strip() if c.image_id is not None else cid
            size, problem, where = self._case_size(rec, image_id, sizes, path, row)
            if problem is not None:
                self.rejects.append(self.reject(cid, where[0], where[1], f"{problem}; {CASE_SKIPPED}"))
                continue
            assert size is not None  # _case_size gives a size or a problem
            seen[cid] = row
            w, h = size
            self._info[cid] = (w, h)
            rows.append(self._case_row(rec, cid, image_id, w, h))
            for lab in d.cases.labels:
                labels.append(
                    {"dataset": self.dataset, "case_id": cid, "source": f"{self.dataset}_cases", "source_label": lab,
                     "value": rec[lab], "text": None}
                )  # fmt: skip
        frame = pl.DataFrame(rows, schema={k: schema.CASES[k] for k in _CASE_COLUMNS})
        self.cases = schema.conform(frame, "cases")
        if labels:
            self.case_labels = schema.conform(pl.DataFrame(labels, schema=schema.CASE_LABELS), "case_labels")

    def _case_rules(self) -> dict[str, Col]:
        """The checked-reader rules of the cases file: one per mapped column, one per label column."""
        d = self.definition
        c = d.cases.columns
        cols: dict[str, Col] = {c.case_id: Col("str")}
        for col, spec in (
            (c.image_id, Col("str")),
            (c.image_path, Col("str")),
            (c.image_width_px, Col("int", lo=1)),
            (c.image_height_px, Col("int", lo=1)),
            (c.subject_id, Col("int", lo=0, required=False)),
            (c.split, Col("str", required=False)),
            (c.reader, Col("str", required=False)),
        ):
            if col is not None:
                self._one_rule(cols, col, spec)
        for lab in d.cases.labels:
            self._one_rule(cols, lab, Col("float", required=False))
        return cols

    def _case_row(self, rec: dict[str, Any], cid: str, image_id: str, w: int, h: int) -> dict[str, Any]:
        """The ``cases`` row of a kept cases-file row (``w`` x ``h``: the image size in pixels)."""
        c = self.definition.cases.columns

        def value(col: str | None) -> Any:  # None: the column is not mapped, or empty in this row
            return rec[col] if col is not None else None

        subject, split, image_path, reader = (value(k) for k in (c.subject_id, c.split, c.image_path, c.reader))
        return {
            "dataset": self.dataset,
            "case_id": cid,
            "image_id": image_id,
            "subject_id": int(subject) if subject is not None else None,
            "split": split.strip() if split is not None else None,
            "image_path": image_path.strip() if image_path is not None else None,
            "image_height_px": h,
            "image_width_px": w,
            "reader": reader.strip() if reader is not None else None,
            "discarded": False,
        }

    def _one_rule(self, cols: dict[str, Col], col: str, spec: Col) -> None:
        if col in cols:
            raise GazeprepError(f"{self.definition_path}: cases: column {col!r} is mapped to two fields")
        cols[col] = spec

    def _size_table(self) -> dict[str, tuple[int, int] | str]:
        """image id -> (width, height), or the reason it has none (a bad or conflicting row)."""
        s = self.definition.images.sizes  # type: ignore[union-attr]
        assert s is not None
        path = self._path(s.file)
        c = s.columns
        cols = {c.image_id: Col("str"), c.width_px: Col("int", lo=1), c.height_px: Col("int", lo=1)}
        table = self._read_csv(path, cols, s.other_columns, "images.sizes")
        for b in table.bad:
            self.rejects.append(self.reject(None, path, b.row, f"{b.reason}; {ROW_DROPPED}"))
        out: dict[str, tuple[int, int] | str] = {}
        first: dict[str, int] = {}
        for image_id, w, h, row in table.df.select(c.image_id, c.width_px, c.height_px, "source_row").iter_rows():
            key = image_id.strip()
            size = (int(w), int(h))
            if key in out and out[key] != size:
                out[key] = f"{self.rel(path)} gives two sizes for image {key!r} (rows {first[key]} and {row})"
            elif key not in out:
                out[key], first[key] = size, row
        return out

    def _case_size(
        self, rec: dict, image_id: str, sizes: dict | None, cases_path: Path, row: int
    ) -> tuple[tuple[int, int] | None, str | None, tuple[Path, int | None]]:
        """(width, height) of a case's image, or (None, reason, (file, row)) naming where it failed."""
        d = self.definition
        c = d.cases.columns
        if c.image_width_px is not None:
            return (int(rec[c.image_width_px]), int(rec[c.image_height_px])), None, (cases_path, row)
        if sizes is not None:
            got = sizes.get(image_id)
            if got is None:
                return None, f"image {image_id!r} has no row in {d.images.sizes.file}", (cases_path, row)  # type: ignore[union-attr]
            if isinstance(got, str):
                return None, got, (cases_path, row)
            return got, None, (cases_path, row)
        # image files: header only
        if self._images_root is not None:
            folder = self._images_root
        else:
            assert d.images is not None and d.images.folder is not None  # validated: images has folder or sizes
            folder = self._path(d.images.folder)
        rel = rec[c.image_path].strip()
        try:
            img = safe_join(folder, rel)
        except GazeprepError as exc:
            return None, f"column '{c.image_path}': {exc}", (cases_path, row)
        try:
            h, w = image_size(img)
        except InputFormatError as exc:
            return None, exc.reason, (folder / rel, None)
        return (w, h), None, (cases_path, row)

    def _split_shared(self, file: str, cols: dict[str, Col], section: Fixations | Words) -> dict[str, pl.DataFrame]:
        """Read a file holding every case once; its good rows grouped by case id."""
        path = self._path(file)
        cid_col = section.columns.case_id
        assert cid_col is not None
        try:
            table = self._read_csv(path, cols, section.other_columns, _section_name(section))
        except InputFormatError as exc:  # every case is affected: one rejects row, cases then skip
            self.rejects.append(self.reject(None, path, exc.row, f"{exc.reason}; table left empty for every case"))
            return {}
        for b in table.bad:
            self.rejects.append(self.reject(None, path, b.row, f"{b.reason}; {ROW_DROPPED}"))
        df = table.df.with_columns(pl.col(cid_col).str.strip_chars())
        unknown = df.filter(~pl.col(cid_col).is_in(list(self._info)))
        for cid, row in unknown.select(cid_col, "source_row").iter_rows():
            self.rejects.append(
                self.reject(None, path, row, f"case id {cid!r} is not in {self.definition.cases.file}; {ROW_DROPPED}")
            )
        df = df.filter(pl.col(cid_col).is_in(list(self._info)))
        if df.height == 0:
            return {}
        return {k[0]: v for k, v in df.partition_by(cid_col, as_dict=True, maintain_order=True).items()}

    # ---- per case ---------------------------------------------------------------------------
    def _read_case(self, case_id: str) -> CaseData:
        """Per-case tables of ``case_id``. Never raises on bad data (rejects instead)."""
        d = self.definition
        rejects: list[dict] = []
        tables: dict[str, pl.DataFrame] = {t: schema.empty(t) for t in self.tables}
        w, h = self._info[case_id]
        try:
            raw, fix_path = self._rows(
                "fixations", d.fixations.file, _fixation_cols(d.fixations), d.fixations, case_id, rejects
            )
            tables["fixations"] = self._fixations(case_id, raw, fix_path, w, h, rejects)
        except InputFormatError as exc:
            rejects.append(self.reject(case_id, Path(exc.path), exc.row, f"{exc.reason}; {CASE_SKIPPED}"))
            return self.empty_case(case_id, rejects)
        if d.words is not None:
            try:
                raw, words_path = self._rows("words", d.words.file, _word_cols(d.words), d.words, case_id, rejects)
                self._words(case_id, raw, words_path, tables, rejects)
            except InputFormatError as exc:
                rejects.append(
                    self.reject(case_id, Path(exc.path), exc.row, f"{exc.reason}; reports and words left empty")
                )
        return CaseData(case_id, tables, rejects)

    def _rows(
        self, table: str, file: str, cols: dict[str, Col], section: Fixations | Words, case_id: str, rejects: list[dict]
    ) -> tuple[pl.DataFrame, Path]:
        """The case's checked rows of ``table`` (from its own file or the shared one) and that file."""
        if table in self._shared:
            path = self._path(file)
            rows = self._shared[table].get(case_id)
            if rows is None:
                raise InputFormatError(path, f"no {table} rows for case {case_id!r}")
            return rows, path
        path = self._path(file, case_id)
        t = self._read_csv(path, cols, section.other_columns, _section_name(section))
        for b in t.bad:
            rejects.append(self.reject(case_id, path, b.row, f"{b.reason}; {ROW_DROPPED}"))
        if t.df.height == 0:
            raise InputFormatError(path, f"no valid {table} rows" if t.n_rows else "no data rows (header only)")
        return t.df, path

    def _times(self, df: pl.DataFrame, c: _Timed, unit: str) -> pl.DataFrame:
        """Add ``__t0``/``__t1`` in seconds."""
        k = TIME_UNITS[unit]
        t0 = pl.col(c.t_start) * k
        t1 = pl.col(c.t_end) * k if c.t_end is not None else (pl.col(c.t_start) + pl.col(c.duration)) * k  # type: ignore[arg-type]
        return df.with_columns(t0.alias("__t0"), t1.alias("__t1"))

    def _fixations(
        self, case_id: str, df: pl.DataFrame, path: Path, w: int, h: int, rejects: list[dict]
    ) -> pl.DataFrame:
        f = self.definition.fixations
        c = f.columns
        df = self._times(df, c, f.time_unit)
        x = df.get_column(c.x).to_numpy().astype(np.float64)
        y = df.get_column(c.y).to_numpy().astype(np.float64)
        if f.position_unit == "screen":
            scr = self.definition.screen
            assert scr is not None
            left, top, aw, ah = scr.area(w, h)
            x = (x * scr.width_px - left) * (w / aw)
            y = (y * scr.height_px - top) * (h / ah)
        far = far_outside(x, y, w, h)
        if far.any():
            rows = df.get_column("source_row").to_numpy()
            for i in np.flatnonzero(far):
                rejects.append(self.reject(
                    case_id, path, int(rows[i]),
                    f"position ({x[i]:g}, {y[i]:g}) px is far outside the {w}x{h} image (corrupt value); {ROW_DROPPED}",
                ))  # fmt: skip
            keep = ~far
            df, x, y = df.filter(pl.Series(keep)), x[keep], y[keep]
        df = df.with_columns(pl.Series("__x", x), pl.Series("__y", y))
        end_label = c.t_end if c.t_end is not None else f"{c.t_start} + {c.duration}"
        df, tbad = time_problems(df, "__t0", "__t1", start_label=c.t_start, end_label=end_label)
        for row, reason in tbad:
            rejects.append(self.reject(case_id, path, row, f"{reason}; {ROW_DROPPED}"))
        n = df.height
        if n == 0:
            raise InputFormatError(path, "no valid fixation rows")
        ppd_x: pl.Series | float | None
        ppd_y: pl.Series | float | None
        if c.px_per_deg_x is not None:
            ppd_x, ppd_y = df.get_column(c.px_per_deg_x), df.get_column(c.px_per_deg_y)  # type: ignore[arg-type]
        elif f.pixels_per_degree is not None:
            ppd_x = ppd_y = f.pixels_per_degree
        else:
            ppd = self.definition.screen.px_per_deg(w, h) if self.definition.screen is not None else None
            ppd_x, ppd_y = ppd if ppd is not None else (None, None)
        xs, ys = df.get_column("__x").to_numpy(), df.get_column("__y").to_numpy()
        return build_table(
            "fixations", n,
            {
                "dataset": self.dataset, "case_id": case_id, "fixation_idx": np.arange(n, dtype=np.int32),
                "t_start_s": df.get_column("__t0"), "t_end_s": df.get_column("__t1"),
                "x_px": df.get_column("__x"), "y_px": df.get_column("__y"),
                "px_per_deg_x": ppd_x, "px_per_deg_y": ppd_y,
                "in_image": (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h), "source_row": df.get_column("source_row"),
            },
        )  # fmt: skip

    def _words(
        self, case_id: str, df: pl.DataFrame, path: Path, tables: dict[str, pl.DataFrame], rejects: list[dict]
    ) -> None:
        wd = self.definition.words
        assert wd is not None and self.transcript is not None
        c = wd.columns
        df = self._times(df, c, wd.time_unit)
        end_label = c.t_end if c.t_end is not None else f"{c.t_start} + {c.duration}"
        df, tbad = time_problems(df, "__t0", "__t1", start_label=c.t_start, end_label=end_label)
        for row, reason in tbad:
            rejects.append(self.reject(case_id, path, row, f"{reason}; {ROW_DROPPED}"))
        if df.height == 0:
            raise InputFormatError(path, "empty transcript (no valid word rows)")
        words = [s.strip() for s in df.get_column(c.word).to_list()]
        n = len(words)
        text = self.transcript.join(words)
        tables["reports"] = build_table("reports", 1, {"dataset": self.dataset, "case_id": case_id, "text": text})
        tables["words"] = build_table(
            "words", n,
            {
                "dataset": self.dataset, "case_id": case_id, "word_idx": np.arange(n, dtype=np.int32),
                "word": pl.Series("word", words, dtype=pl.Utf8), "t_start_s": df.get_column("__t0"),
                "t_end_s": df.get_column("__t1"),
            },
        )  # fmt: skip
