"""Recipes: declarative descriptions of one kind of gaze ground truth (``pipelines/*.yaml``).

A recipe is pure data, loaded with ``yaml.safe_load`` and validated by the pydantic models below
(unknown keys are rejected). It names the dataset, the window rule that selects fixations in time,
the rendering parameters, the output grid and an optional anatomy filter. :meth:`Recipe.resolved`
gives the recipe with every default filled in; it is written into ``manifest.json`` and hashed.

Window rules are typed, never parsed from strings:

* :class:`SentenceWindow` - paper 004's family (default: start ``max(sentence_start - 1.5 s,
  previous_sentence_start)``, end at the start of the word where the sentence's last
  positive/uncertain mention begins), with every start/end option of 004 section 2.8;
* :class:`KeywordWindow` - paper 000's ``[0, end of the rightmost sentence containing a keyword]``;
* :class:`WholeRecordingWindow` - all fixations of the reading;
* :class:`PhraseWindow` - one window per transcript phrase/word (EGD-CXR temporal maps).

Bounds. Every number must be finite (``.nan``/``.inf`` are rejected) and within the limits below,
so that a typo cannot ask for terabytes or hours of work (errors are
one-line :class:`~gazeprep.errors.RecipeError` naming the file and the field):

* output size: ``1..MAX_OUTPUT_SIDE_PX`` (16384) pixels per side, ``stride`` ``1..MAX_STRIDE`` (64);
* one map in memory: ``height * width * MAP_BYTES_PER_PIXEL`` (4: rendering is float32 whatever the
  stored dtype) at most :data:`MAX_MAP_BYTES` (512 MiB, e.g. 11585 x 11585 pixels). A fixed size is
  checked when the recipe is loaded or overridden (``--size``); a ``native`` size is checked per case
  when it is rendered (a case whose image is larger is a ``rejects`` row naming the case and its
  size; the other cases go on), see :func:`map_size_problem`;
* sigma: ``0 < value <= MAX_SIGMA_PX`` (5000 original pixels) or ``MAX_SIGMA_DEG`` (20 degrees);
* ``truncate_sigmas``: 3..40 sigmas; window lags: ``0..MAX_LAG_S`` (600 s).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gazeprep.datasets.registry import recipe_dataset_problem
from gazeprep.errors import RecipeError
from gazeprep.paths import default_pipelines_dir

#: Largest output side (pixels) a recipe or ``--size`` may ask for.
MAX_OUTPUT_SIDE_PX = 16384
#: Largest ``stride`` of the ``pad_crop_stride`` fit.
MAX_STRIDE = 64
#: Bytes per pixel of one map while it is computed (float32, whatever the stored dtype).
MAP_BYTES_PER_PIXEL = 4
#: Memory limit of one map: ``height * width * MAP_BYTES_PER_PIXEL`` bytes (512 MiB). The renderer
#: holds a few maps of this size per worker at a time.
MAX_MAP_BYTES = 512 * 2**20
#: Largest sigma in original-image pixels (wider than any chest X-ray).
MAX_SIGMA_PX = 5000.0
#: Largest sigma in degrees of visual angle (about the whole image at REFLACX's ~94 px/degree).
MAX_SIGMA_DEG = 20.0
#: Largest window lag in seconds (longer than any dictation).
MAX_LAG_S = 600.0


# validation context key of a recipe read back from an export (see Recipe.from_stored)
_STORED = "stored_recipe"

# recipe hash -> the file it was loaded from (to name the file in errors about overrides)
_LOADED_FROM: dict[str, str] = {}


def _first_error(exc: ValidationError) -> str:
    """``<field>: <message>`` of a pydantic error, on one line."""
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    msg = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    return f"{loc}: {msg}"


def map_bytes(height: int, width: int) -> int:
    """Bytes one ``height x width`` map takes while it is rendered (float32)."""
    return int(height) * int(width) * MAP_BYTES_PER_PIXEL


def map_size_problem(height: int, width: int) -> str | None:
    """Why a ``height x width`` map cannot be rendered (``None`` when it can).

    The same rule applies to a recipe's fixed size (checked when it is loaded) and to each case of a
    ``native``-size recipe (checked by the renderer, which rejects that case with this reason).
    """
    if height < 1 or width < 1:
        return f"a {height} x {width} map has no pixels"
    need = map_bytes(height, width)
    if need > MAX_MAP_BYTES:
        return (
            f"one {height} x {width} map needs {need / 2**20:.0f} MiB of float32 memory, over the "
            f"limit of {MAX_MAP_BYTES // 2**20} MiB (gazeprep.recipes.MAX_MAP_BYTES)"
        )
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


StartAnchor = Literal[
    "sentence_start",  # start of the first word of the mention sentence
    "sentence_end",  # end of the sentence's final '.' token
    "first_mention",  # start of the word where the sentence's first mention begins
    "previous_sentence_start",
    "previous_sentence_end",
    "report_start",  # start of the first word of the report
    "recording_start",  # t = 0
]
StartFloor = Literal["previous_sentence_start", "previous_sentence_end", "report_start", "recording_start", "none"]
EndAnchor = Literal["sentence_start", "sentence_end", "first_mention", "last_mention"]
MentionStatus = Literal["positive", "uncertain", "negative"]


class SentenceWindow(_Strict):
    """Paper 004 (section 2.8): one window per sentence that has a selected mention.

    ``t_start = max(anchor(start) - lag_s, floor(not_before))`` where a missing previous sentence
    counts as t = 0, and ``t_end = anchor(end)``. Mention anchors use the start time of the word in
    which the mention begins. Every label mentioned in the sentence shares its window.
    """

    kind: Literal["sentence"] = "sentence"
    start: StartAnchor = "sentence_start"
    lag_s: float = Field(1.5, ge=0.0, le=MAX_LAG_S)
    not_before: StartFloor = "previous_sentence_start"
    end: EndAnchor = "last_mention"
    mentions: tuple[MentionStatus, ...] = ("positive", "uncertain")
    label_group: str | None = None  # keep only the targets of this group of rules/labels.yaml (None: all)

    @property
    def needs_transcript(self) -> bool:
        """Sentence windows are placed on the timed transcript."""
        return True


class KeywordWindow(_Strict):
    """Paper 000: ``[0, end of the rightmost sentence containing a keyword of the target]``.

    Keyword sets per target are rule data (``rules/anatomy_keywords.yaml``).
    """

    kind: Literal["keyword_sentences"] = "keyword_sentences"
    keywords: str = "anatomy_keywords"  # rules/<keywords>.yaml
    targets: tuple[str, ...] = ("heart", "left_lung", "right_lung")

    @property
    def needs_transcript(self) -> bool:
        """Keyword windows end at a transcript sentence."""
        return True


class WholeRecordingWindow(_Strict):
    """All fixations of the reading (target ``"full"``).

    ``end``: ``recording_end`` keeps every fixation; ``last_word_end`` stops at the end of the last
    dictated word (004's full-report ablation).
    """

    kind: Literal["whole_recording"] = "whole_recording"
    end: Literal["recording_end", "last_word_end"] = "recording_end"

    @property
    def needs_transcript(self) -> bool:
        """Only the ``last_word_end`` variant needs the transcript (the time of its last word)."""
        return self.end != "recording_end"


class PhraseWindow(_Strict):
    """One window per transcript word/phrase (targets ``"phrase_0000"``, ...)."""

    kind: Literal["phrase"] = "phrase"
    lag_s: float = Field(0.0, ge=0.0, le=MAX_LAG_S)

    @property
    def needs_transcript(self) -> bool:
        """One window per transcript word."""
        return True


WindowRule = Annotated[
    SentenceWindow | KeywordWindow | WholeRecordingWindow | PhraseWindow, Field(discriminator="kind")
]


class Sigma(_Strict):
    """Gaussian standard deviation: ``deg`` (degrees of visual angle, times the fixation's pixels per
    degree, per axis) or ``px`` (original-image pixels)."""

    value: float = Field(gt=0.0)
    unit: Literal["deg", "px"]

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        top = MAX_SIGMA_PX if self.unit == "px" else MAX_SIGMA_DEG
        if self.value > top:
            raise ValueError(f"sigma {self.value:g} {self.unit} is above the maximum of {top:g} {self.unit}")
        return self


class RenderSpec(_Strict):
    """How fixations become a map (see the rendering contract in DESIGN.md and gazeprep.heatmaps).

    * ``source``: ``fixations`` (the ``fixations`` table) or ``gaze_samples`` (raw tracker samples,
      point events at ``t_s``; only ``weight: count``, no shown rectangles).
    * ``weight``: ``duration`` (full fixation duration), ``window_overlap`` (duration clipped to the
      window, paper 004) or ``count`` (1 per fixation/sample, EGD-CXR and MT-UNet).
    * ``clip_to_shown_rect``: each fixation's Gaussian is zero outside the part of the image that was
      on screen for it (REFLACX ``*_shown_from_image`` columns, rounded as 004's ``get_gaussian``).
    * ``drop_outside_image``: drop fixations whose position lies outside the image before rendering
      (EGD-CXR's code and MT-UNet count only points inside the image). Otherwise an outside fixation
      still contributes the tail of its density that falls on the image.
    * ``position_rounding``: ``floor`` puts each point on the integer pixel it falls in, as count
      images (``record[y, x] += 1`` after ``int()``) do; ``none`` keeps sub-pixel positions.
    * ``normalize``: applied to each window's map when ``normalize_each_window`` (004: every sentence
      map has max 1 before the max over mentions) and to the aggregate of a target's windows.
    * ``aggregate``: how the windows of one target combine (``max``: 004's max over mentions).
    * ``empty_window``: a window without any weight is ``skip``ped (a ``rejects`` row) or rendered as
      ``zeros``; never a division by zero.
    * ``position_rounding``: ``round`` snaps to the nearest pixel instead.
    * ``truncate_sigmas``: with ``kernel: density``, the minimum kernel half-width in sigmas; the
      renderer widens it with the number of fixations so that all cut tails together stay below 1e-7
      of the largest single-fixation peak (well inside the contract's 1e-6 of the peak). With
      ``kernel: discrete``, the exact half-width: ``int(truncate_sigmas * sigma + 0.5)`` original
      pixels, scipy.ndimage's rule (EGD-CXR: 4).

    Rules that reproduce a paper's code (defaults keep the rendering contract of DESIGN.md):

    * ``kernel``: ``density`` is the contract's normalised Gaussian density; ``discrete`` is the kernel
      of ``scipy.ndimage.gaussian_filter`` and ``cv2.GaussianBlur``: ``exp(-d^2 / (2 sigma^2))``
      sampled at the integer pixel offsets ``|d| <= radius`` and divided by its sum over them.
    * ``kernel_size``: an odd full width in original pixels (OpenCV's ``ksize``; radius
      ``(kernel_size - 1) / 2``), instead of ``truncate_sigmas``; ``kernel: discrete`` only.
    * ``border``: what happens to kernel mass beyond the image border: ``drop`` (the contract),
      ``reflect`` (scipy's ``mode='reflect'``, mirrored about the pixel edge: ``d c b a | a b c d |
      d c b a``) or ``reflect101`` (OpenCV's ``BORDER_REFLECT_101``, mirrored about the edge pixel:
      ``d c b | a b c d | c b a``); reflected mass is folded back exactly, repeatedly when the kernel
      is wider than the image. Not with ``clip_to_shown_rect``.
    * ``pad_to_even``: EGD-CXR's canvas: an odd image height (width) gets one more row (column) at the
      bottom (right) before counting, blurring (the border is the padded edge) and normalising (over
      the padded array); a native-size map is cropped back to the image afterwards.
    * ``point_filter``: which points are counted. ``contract`` follows ``drop_outside_image``;
      ``egd-cxr`` is ``process_eye_gaze_table``'s test (on the padded canvas, a point counts when
      ``0 < x < W`` and ``int(y) > 0``); ``mt-unet`` is ``get_gaze_dot``'s (``0 <= int(x) < W``,
      ``0 <= int(y) < H`` on the release's integer positions, where gaze off the image's screen area
      became ``int(-W' / screen_width_px)``, i.e. pixel (0, 0) on an image smaller than its screen
      area; needs the case's screen layout).
    * ``int8_count_wrap``: MT-UNet stores its per-pixel sample counts as int8, so 128 or more samples
      on one pixel wrap negative. Off by default (counts are exact; a ``rejects`` row warns when a
      map would have differed); on reproduces the wrap.
    """

    source: Literal["fixations", "gaze_samples"] = "fixations"
    sigma: Sigma
    weight: Literal["duration", "window_overlap", "count"] = "window_overlap"
    clip_to_shown_rect: bool = False
    drop_outside_image: bool = False
    position_rounding: Literal["none", "floor", "round"] = "none"
    normalize: Literal["sum", "max", "minmax", "none"] = "max"
    normalize_each_window: bool = True
    aggregate: Literal["max", "sum"] = "max"  # over the windows of one target
    empty_window: Literal["skip", "zeros"] = "skip"
    truncate_sigmas: float = Field(6.0, ge=3.0, le=40.0)
    kernel: Literal["density", "discrete"] = "density"
    kernel_size: StrictInt | None = Field(None, ge=3, le=20001)
    border: Literal["drop", "reflect", "reflect101"] = "drop"
    pad_to_even: bool = False
    point_filter: Literal["contract", "egd-cxr", "mt-unet"] = "contract"
    int8_count_wrap: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.source == "gaze_samples":
            if self.weight != "count":
                raise ValueError("gaze samples are point events: weight must be 'count'")
            if self.clip_to_shown_rect:
                raise ValueError("gaze samples carry no shown rectangle: clip_to_shown_rect must be false")
        if self.kernel_size is not None:
            if self.kernel != "discrete":
                raise ValueError("kernel_size is OpenCV's sampled kernel: it needs kernel: discrete")
            if self.kernel_size % 2 == 0:
                raise ValueError("kernel_size must be odd (OpenCV's ksize)")
        if self.border != "drop" and self.clip_to_shown_rect:
            raise ValueError("border reflect/reflect101 cannot be combined with clip_to_shown_rect")
        if self.int8_count_wrap and (self.weight != "count" or self.position_rounding == "none"):
            raise ValueError("int8_count_wrap applies to per-pixel counts: weight count with position_rounding")
        return self


class OutputSpec(_Strict):
    """Output grid (see :class:`gazeprep.heatmaps.grid.OutputGrid`).

    * ``size``: an int ``N`` (``N x N``), ``[height, width]``, or ``native`` (original image pixels;
      ``fit`` is then ignored).
    * ``fit``: ``letterbox`` keeps the aspect ratio and pads centred; ``stretch`` resizes each axis;
      ``pad_crop_stride`` centre-pads/crops the original image to ``size * stride`` pixels and samples
      every ``stride``-th pixel (MT-UNet: 3200 x 2560, stride 5 -> 640 x 512).
    * ``letterbox_rule``: ``centre`` (exact centring) or ``ricbl`` (paper 004's
      ``XRayResizerPadRound32(N)`` + ``Resize(N)`` geometry, square sizes only).
    * ``dtype``: storage type of the exported maps (rendering is always float32 in memory).
    """

    size: StrictInt | tuple[StrictInt, StrictInt] | Literal["native"] = 512
    fit: Literal["letterbox", "stretch", "pad_crop_stride"] = "letterbox"
    letterbox_rule: Literal["centre", "ricbl"] = "centre"
    stride: StrictInt = Field(default=1, ge=1, le=MAX_STRIDE)
    dtype: Literal["float16", "float32"] = "float32"

    @field_validator("size")
    @classmethod
    def _positive(cls, v: int | tuple[int, int] | str) -> int | tuple[int, int] | str:
        sides = (v,) if isinstance(v, int) else v if isinstance(v, tuple) else ()
        if any(s <= 0 or s > MAX_OUTPUT_SIDE_PX for s in sides):
            raise ValueError(
                f"size {list(v) if isinstance(v, tuple) else v} is out of range: each side must be "
                f"1..{MAX_OUTPUT_SIDE_PX} pixels (an int N, [height, width] or 'native')"
            )
        if sides:
            problem = map_size_problem(*((v, v) if isinstance(v, int) else v))
            if problem:
                raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.letterbox_rule == "ricbl" and isinstance(self.size, tuple) and self.size[0] != self.size[1]:
            raise ValueError("letterbox_rule 'ricbl' needs a square size")
        if self.stride != 1 and self.fit != "pad_crop_stride":
            raise ValueError("stride applies to fit 'pad_crop_stride' only")
        return self

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(height, width)`` of the grid, ``None`` for native size."""
        if self.size == "native":
            return None
        return (self.size, self.size) if isinstance(self.size, int) else self.size


class AnatomyFilter(_Strict):
    """Paper 000: drop fixations outside the target's anatomical mask."""

    masks: Literal["samed", "egd_masks"] = "samed"
    model_dir: str | None = None  # where `gazeprep anatomy predict` wrote its masks (None: <out>/anatomy)
    heart_from_mediastinum_cut_top: float = Field(1.0 / 3.0, ge=0.0, lt=1.0)
    overrides_dir: str | None = None
    target_structures: dict[str, str] = Field(
        default_factory=lambda: {"heart": "heart", "left_lung": "left_lung", "right_lung": "right_lung"}
    )


class Recipe(_Strict):
    """One ground-truth kind. See ``pipelines/*.yaml``."""

    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    paper: str | None = None  # file in shared/papers or a citation
    # a registered dataset name, or "declared" for any dataset declared in a YAML file (checked
    # against the dataset registry, see gazeprep.datasets.registry; not for a recipe read back from an
    # export, see Recipe.from_stored)
    dataset: str
    window: WindowRule
    render: RenderSpec
    output: OutputSpec = OutputSpec()
    anatomy: AnatomyFilter | None = None
    # labeler rule profile (rules/README.md): "gazeprep" (default, the most accurate labels) or
    # "lanfredi2023" (paper 004's labeler, for 004's ground truth); checked against the rules folder
    # when a build starts
    profile: str = Field("gazeprep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")

    @field_validator("dataset")
    @classmethod
    def _registered_dataset(cls, v: str, info: ValidationInfo) -> str:
        if isinstance(info.context, dict) and info.context.get(_STORED):
            return v  # a recipe read back from an export names the dataset it was built from
        problem = recipe_dataset_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @classmethod
    def from_stored(cls, data: dict | str) -> Recipe:
        """A recipe read back from an export's manifest or a worker's build spec (a dict, or JSON
        text): validated like a recipe file, except that its dataset need not be registered in this
        process (a declared or plugin dataset whose definition is not loaded here)."""
        if isinstance(data, str):
            return cls.model_validate_json(data, context={_STORED: True})
        return cls.model_validate(data, context={_STORED: True})

    def resolved(self) -> dict:
        """The recipe with every default filled in (JSON-compatible)."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """SHA-256 of the resolved recipe (stable key order)."""
        blob = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_overrides(self, **output_overrides: Any) -> Recipe:
        """A copy with fields of ``output`` replaced (e.g. ``size="native"``; ``None`` keeps the
        recipe's value). The result passes the same validation as a recipe file.

        Raises :class:`RecipeError` (one line naming the recipe and the field) for an invalid value.
        """
        update = {k: v for k, v in output_overrides.items() if v is not None}
        unknown = sorted(set(update) - set(OutputSpec.model_fields))
        if unknown:
            raise RecipeError(f"recipe {self.name!r}: unknown output field(s) {unknown}")
        if isinstance(update.get("size"), list):
            update["size"] = tuple(update["size"])
        try:
            # only output fields change: the dataset was checked when this recipe was made
            return Recipe.model_validate(
                {**self.resolved(), "output": {**self.resolved()["output"], **update}}, context={_STORED: True}
            )
        except ValidationError as exc:
            given = ", ".join(f"{k}={v!r}" for k, v in update.items())
            src = _LOADED_FROM.get(self.hash(), f"recipe {self.name!r}")
            raise RecipeError(f"{src}: overridden with {given}: {_first_error(exc)}") from None


def list_recipes(pipelines_dir: str | Path | None = None) -> list[str]:
    d = Path(pipelines_dir) if pipelines_dir else default_pipelines_dir()
    return sorted(p.stem for p in d.glob("*.yaml"))


def load_recipe(name_or_path: str | Path, pipelines_dir: str | Path | None = None) -> Recipe:
    """Load a recipe by name (``pipelines/<name>.yaml``) or by path, with ``yaml.safe_load``.

    Raises :class:`RecipeError` naming the file and the first invalid field.
    """
    p = Path(name_or_path)
    if not p.suffix:
        p = (Path(pipelines_dir) if pipelines_dir else default_pipelines_dir()) / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(list_recipes(pipelines_dir))
        raise RecipeError(f"recipe {str(name_or_path)!r} not found (known: {known})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a mapping")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{p}: {_first_error(exc)}") from None
    if recipe.name != p.stem:
        raise RecipeError(f"{p}: name: {recipe.name!r} differs from the file name {p.stem!r}")
    _LOADED_FROM[recipe.hash()] = str(p)
    return recipe
