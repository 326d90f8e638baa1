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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gazeprep.errors import RecipeError
from gazeprep.paths import default_pipelines_dir


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    lag_s: float = Field(1.5, ge=0.0)
    not_before: StartFloor = "previous_sentence_start"
    end: EndAnchor = "last_mention"
    mentions: tuple[MentionStatus, ...] = ("positive", "uncertain")


class KeywordWindow(_Strict):
    """Paper 000: ``[0, end of the rightmost sentence containing a keyword of the target]``.

    Keyword sets per target are rule data (``rules/anatomy_keywords.yaml``).
    """

    kind: Literal["keyword_sentences"] = "keyword_sentences"
    keywords: str = "anatomy_keywords"  # rules/<keywords>.yaml
    targets: tuple[str, ...] = ("heart", "left_lung", "right_lung")


class WholeRecordingWindow(_Strict):
    """All fixations of the reading (target ``"full"``).

    ``end``: ``recording_end`` keeps every fixation; ``last_word_end`` stops at the end of the last
    dictated word (004's full-report ablation).
    """

    kind: Literal["whole_recording"] = "whole_recording"
    end: Literal["recording_end", "last_word_end"] = "recording_end"


class PhraseWindow(_Strict):
    """One window per transcript word/phrase (targets ``"phrase_0000"``, ...)."""

    kind: Literal["phrase"] = "phrase"
    lag_s: float = Field(0.0, ge=0.0)


WindowRule = Annotated[
    Union[SentenceWindow, KeywordWindow, WholeRecordingWindow, PhraseWindow], Field(discriminator="kind")
]


class Sigma(_Strict):
    """Gaussian standard deviation: ``deg`` (degrees of visual angle, times the fixation's pixels per
    degree, per axis) or ``px`` (original-image pixels)."""

    value: float = Field(gt=0.0)
    unit: Literal["deg", "px"]


class RenderSpec(_Strict):
    """How fixations become a map (see the rendering contract in DESIGN.md)."""

    source: Literal["fixations", "gaze_samples"] = "fixations"
    sigma: Sigma
    weight: Literal["duration", "window_overlap", "count"] = "window_overlap"
    clip_to_shown_rect: bool = False
    normalize: Literal["sum", "max", "minmax", "none"] = "max"
    aggregate: Literal["max", "sum"] = "max"  # over the windows of one target
    empty_window: Literal["skip", "zeros"] = "skip"
    truncate_sigmas: float = Field(5.5, ge=3.0)  # kernel support; 5.5 sigma keeps the error < 1e-6 of the peak


class OutputSpec(_Strict):
    """Output grid. ``size``: an int N renders N x N (letterboxed: the image is padded to a square,
    centred, as in 004) or ``native`` (original image pixels)."""

    size: Union[int, Literal["native"]] = 512
    letterbox: bool = True
    dtype: Literal["float16", "float32"] = "float32"

    @field_validator("size")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("size must be a positive int or 'native'")
        return v


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
    dataset: Literal["reflacx", "egd-cxr"]
    window: WindowRule
    render: RenderSpec
    output: OutputSpec = OutputSpec()
    anatomy: AnatomyFilter | None = None

    def resolved(self) -> dict:
        """The recipe with every default filled in (JSON-compatible)."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """SHA-256 of the resolved recipe (stable key order)."""
        blob = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_overrides(self, **output_overrides) -> "Recipe":
        """A copy with fields of ``output`` replaced (e.g. ``size="native"``)."""
        out = self.output.model_copy(update={k: v for k, v in output_overrides.items() if v is not None})
        return Recipe.model_validate({**self.resolved(), "output": out.model_dump(mode="json")})


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
        return Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise RecipeError(f"{p}: {loc}: {first['msg']}") from None
