"""The per-case pipeline: read -> text -> windows -> (anatomy masks) -> render -> :class:`CaseResult`.

:func:`process_case` is the only per-case pipeline; ``build-heatmaps`` stores its result as a
resumable part, ``sweep-windows`` runs its pieces (:func:`case_text` once per case, then
:func:`case_windows` and :func:`render_windows` once per window rule of the grid) so that every rule
is evaluated with exactly the maps a build with that rule would write.

Rules of a case, in order:

* no render events (``recipe.render.source``: fixations or gaze samples) -> a ``render`` reject, no map;
* no transcript words and a window rule that needs them (``rule.needs_transcript``) -> a ``text``
  reject ("empty transcript"), no map; a rule that needs none (whole recording to its end) renders
  with empty text tables and records that the map was built without text;
* the window rule's own filters (e.g. a sentence window's ``label_group``) are applied by
  :func:`gazeprep.text.compute_windows`;
* an anatomy recipe whose masks could not be read (``mask_error``) renders nothing (never a map
  without its anatomy filter) and records why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from gazeprep.recipes import Recipe

if TYPE_CHECKING:
    from gazeprep.export import CaseResult
    from gazeprep.heatmaps import RenderedMap


@dataclass
class CaseText:
    """The text stage of one case: ``words`` (with character offsets), ``sentences``, ``mentions``
    (schema tables of :mod:`gazeprep.schema`) and the rejects rows the stage produced."""

    words: pl.DataFrame
    sentences: pl.DataFrame
    mentions: pl.DataFrame
    rejects: list[dict] = field(default_factory=list)


def case_text(
    words: pl.DataFrame | None, report_text: str | None, *, dataset: str, case_id: str, profile: str | None
) -> CaseText:
    """Sentences, word offsets and labelled mentions of one case (labeler ``profile`` of
    ``rules/profiles``); empty tables when the case has no transcript words."""
    from gazeprep.schema import empty
    from gazeprep.text import Labeler, build_sentences

    if words is None or words.height == 0:
        return CaseText(empty("words"), empty("sentences"), empty("mentions"))
    words_o, sentences, rejects = build_sentences(words, report_text, dataset=dataset, case_id=case_id)
    mentions = Labeler.from_rules(profile=profile).label_case(
        sentences, words_o, report_text or "", dataset=dataset, case_id=case_id
    )
    return CaseText(words_o, sentences, mentions, list(rejects))


def recording_end_s(events: pl.DataFrame) -> float:
    """End of the reading in seconds: the last event end (``t_end_s``; gaze samples: ``t_s``)."""
    t_col = "t_end_s" if "t_end_s" in events.columns else "t_s"
    return float(events.select(pl.col(t_col).max()).item())


def case_windows(
    rule: Any, text: CaseText, events: pl.DataFrame, *, dataset: str, case_id: str, recipe_name: str
) -> pl.DataFrame:
    """The ``windows`` rows of one case under the window ``rule`` (a recipe's ``window``), ending at
    the reading's end (:func:`recording_end_s` of ``events``) where the rule asks for it."""
    from gazeprep.text import compute_windows

    return compute_windows(
        rule,
        sentences=text.sentences,
        words=text.words,
        mentions=text.mentions,
        recording_end_s=recording_end_s(events),
        dataset=dataset,
        case_id=case_id,
        recipe=recipe_name,
    )


def render_windows(
    events: pl.DataFrame,
    windows: pl.DataFrame,
    recipe: Recipe,
    case_row: dict,
    masks: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, RenderedMap], list[dict]]:
    """Render every target of ``windows`` on the recipe's output grid; returns
    ``(maps, rejects)`` as :func:`gazeprep.heatmaps.render_case` (maps: target -> rendered map with
    ``array`` (H x W), ``n_fixations`` and ``total_weight``). ``case_row`` is the case's ``cases`` row
    (image size in pixels; the screen layout for recipes that reproduce MT-UNet's point test)."""
    from gazeprep.heatmaps import render_case

    return render_case(
        events,
        windows,
        recipe,
        image_height_px=int(case_row["image_height_px"]),
        image_width_px=int(case_row["image_width_px"]),
        masks=masks,
        case=case_row,
    )


def process_case(
    release: Any,
    case_id: str,
    recipe: Recipe,
    *,
    dataset: str | None = None,
    data: Any = None,
    masks: dict[str, np.ndarray] | None = None,
    mask_error: str | None = None,
    input_hash: str = "",
) -> CaseResult:
    """Run the whole per-case pipeline on one case of an open ``release`` (a dataset adapter's
    release) with ``recipe``; returns its :class:`~gazeprep.export.CaseResult` (tables, maps keyed by
    target, rejects rows). See the module docstring for the rules.

    Parameters
    ----------
    dataset:
        Name written into the rows (default: ``release.dataset``).
    data:
        The case's tables from ``release.read_case(case_id)``, when the caller already read them.
    masks, mask_error:
        The case's anatomy masks (target -> boolean image-size array) for recipes with an anatomy
        filter, or why they could not be read.
    input_hash:
        The resumable part key stored with the result (see :mod:`gazeprep.pipeline.build`).
    """
    from gazeprep.export import CaseResult
    from gazeprep.schema import reject

    ds = dataset or release.dataset
    data, tables, case_row = _read_case(release, case_id, data)
    rejects: list[dict] = list(data.rejects)
    heatmaps: dict[str, np.ndarray] = {}

    words = data.tables.get("words")
    reports = data.tables.get("reports")
    report_text = reports["text"][0] if reports is not None and reports.height else None
    source = recipe.render.source
    events = data.tables.get(source)
    has_words = words is not None and words.height > 0
    if events is None or events.height == 0:
        rejects.append(reject(ds, case_id, "render", None, None, f"no {source} for this case"))
    elif not has_words and recipe.window.needs_transcript:
        rejects.append(reject(ds, case_id, "text", None, None, "empty transcript: no window can be placed"))
    else:
        text = case_text(words, report_text, dataset=ds, case_id=case_id, profile=recipe.profile)
        rejects.extend(text.rejects)
        if not has_words:
            rejects.append(reject(ds, case_id, "text", None, None, "empty transcript: map built without text"))
        windows = case_windows(recipe.window, text, events, dataset=ds, case_id=case_id, recipe_name=recipe.name)
        tables.update(words=text.words, sentences=text.sentences, mentions=text.mentions, windows=windows)
        if mask_error is not None:
            # an anatomy recipe without masks must not fall back to unfiltered maps
            rejects.append(reject(ds, case_id, "anatomy", None, None, mask_error))
            windows = windows.clear()
        maps, r = render_windows(events, windows, recipe, case_row, masks)
        rejects.extend(r)
        heatmaps = {target: maps[target].array for target in sorted(maps)}
        if maps:
            tables["heatmaps"] = _index_rows(maps, dataset=ds, case_id=case_id, recipe_name=recipe.name)
    return CaseResult(case_id=case_id, input_hash=input_hash, tables=tables, heatmaps=heatmaps, rejects=rejects)


def _read_case(release: Any, case_id: str, data: Any) -> tuple[Any, dict[str, pl.DataFrame], dict]:
    """The case's data (``data``, or read with ``release.read_case``), the tables its result starts
    from (the adapter's per-case tables without the gaze samples, which no export stores, its
    ``cases`` row and, when the release has any, its ``case_labels`` rows) and its ``cases`` row as
    a dict."""
    case_rows = release.cases.filter(pl.col("case_id") == case_id)
    case_row = case_rows.row(0, named=True)
    if data is None:
        data = release.read_case(case_id)
    tables: dict[str, pl.DataFrame] = {k: v for k, v in data.tables.items() if k != "gaze_samples"}
    tables["cases"] = case_rows
    labels = getattr(release, "case_labels", None)
    if labels is not None and labels.height:
        tables["case_labels"] = labels.filter(pl.col("case_id") == case_id)
    return data, tables, case_row


def _index_rows(maps: dict[str, RenderedMap], *, dataset: str, case_id: str, recipe_name: str) -> pl.DataFrame:
    """The case's ``heatmaps`` index rows, one per rendered map in target order (map size in pixels,
    fixations counted and their total weight)."""
    return pl.DataFrame(
        [
            {
                "dataset": dataset,
                "case_id": case_id,
                "target": target,
                "recipe": recipe_name,
                "height_px": int(m.array.shape[0]),
                "width_px": int(m.array.shape[1]),
                "n_fixations": int(m.n_fixations),
                "total_weight": float(m.total_weight),
            }
            for target, m in sorted(maps.items())
        ]
    )
