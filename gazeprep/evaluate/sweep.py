"""Window sweep (paper 004 section 2.8): which sentence window makes label-specific gaze maps agree
best with the radiologists' ellipses?

For every REFLACX case the transcript is parsed and labelled once (with the recipe's labeler profile,
``lanfredi2023`` for ``reflacx-label-specific``); then, for every window rule of the grid, the
label-specific maps are rendered (the ``reflacx-label-specific`` recipe with its window replaced, on a
small letterboxed grid for speed) and compared with the case's ellipses of certainty > 2 by IoU over
004's thresholds. Text, windows and maps come from the pieces of the one per-case pipeline
(:mod:`gazeprep.pipeline.case`), and the cases are mapped by the one executor
(:mod:`gazeprep.pipeline.executor`), so a rule scores exactly the maps ``build-heatmaps`` would write.
A label with an ellipse but no map under a rule (e.g. an empty window) scores IoU 0 at every
threshold, as 004's reference code would (NaN -> 0).

Ranking: per rule and label, the threshold with the best mean IoU on the ``validate`` split (all
cases when the split is absent) is chosen and that mean IoU kept; the rule's score is the mean over
labels (004 averages labels). 004 found ``max(sentence start - 1.5 s, previous sentence start)`` to
the last mention best (IoU 0.233 on its validation set).

Grid (004 section 2.8):

* stage 1 starts: ``max(anchor - T, previous sentence start)`` for anchors sentence start, first
  mention, sentence end and T in {2.5, 5, 7.5} s; and the unlagged start of the report, previous
  sentence start, previous sentence end, mention sentence start, recording start;
  ends: mention sentence start, sentence end, first mention, last mention;
* stage 2: ``max(sentence start - T, previous sentence start)`` -> last mention for
  T in {0.5, 0.75, ..., 5} s;
* baseline: the whole-recording map (target ``full``) used for every label.

Comparison grid (a documented deviation for speed): ellipses are rasterised on the heatmap's output
grid (their bounding boxes mapped with the grid's affine map) instead of upscaling each heatmap to the
DICOM resolution; at 128 px the difference is a fraction of a grid pixel along the ellipse border.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from gazeprep.errors import GazeprepError
from gazeprep.evaluate import metrics as M
from gazeprep.recipes import EndAnchor, Recipe, SentenceWindow, StartAnchor, WholeRecordingWindow

STAGE1_LAGS_S = (2.5, 5.0, 7.5)
STAGE2_LAGS_S = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
ENDS: tuple[EndAnchor, ...] = ("sentence_start", "sentence_end", "first_mention", "last_mention")
BASELINE = "whole recording (full map for every label)"


@dataclass(frozen=True)
class SweepRule:
    """One window rule of the grid: ``window`` None is the whole-recording baseline."""

    name: str
    window: SentenceWindow | None


def rule_name(w: SentenceWindow) -> str:
    """Readable name, e.g. ``max(sentence_start - 1.5 s, previous_sentence_start) -> last_mention``."""
    if w.lag_s > 0 or w.not_before != "none":
        floor = "" if w.not_before == "none" else f", {w.not_before}"
        start = f"max({w.start} - {w.lag_s:g} s{floor})" if w.lag_s > 0 else f"max({w.start}{floor})"
    else:
        start = w.start
    return f"{start} -> {w.end}"


def window_grid(stage: str = "both") -> list[SweepRule]:
    """The rules of 004 section 2.8 (``stage`` ``1``, ``2`` or ``both``), plus the baseline."""
    rules: dict[str, SweepRule] = {}

    def add(w: SentenceWindow) -> None:
        rules.setdefault(rule_name(w), SweepRule(rule_name(w), w))

    if stage in ("1", "both"):
        for end in ENDS:
            lagged: tuple[StartAnchor, ...] = ("sentence_start", "first_mention", "sentence_end")
            for anchor in lagged:
                for lag in STAGE1_LAGS_S:
                    add(SentenceWindow(start=anchor, lag_s=lag, not_before="previous_sentence_start", end=end))
            unlagged: tuple[StartAnchor, ...] = (
                "report_start",
                "previous_sentence_start",
                "previous_sentence_end",
                "sentence_start",
                "recording_start",
            )
            for anchor in unlagged:
                add(SentenceWindow(start=anchor, lag_s=0.0, not_before="none", end=end))
    if stage in ("2", "both"):
        for lag in STAGE2_LAGS_S:
            add(
                SentenceWindow(
                    start="sentence_start", lag_s=lag, not_before="previous_sentence_start", end="last_mention"
                )
            )
    if stage not in ("1", "2", "both"):
        raise GazeprepError(f"--stage must be 1, 2 or both, got {stage!r}")
    return [*rules.values(), SweepRule(BASELINE, None)]


def _recipe_for(base: Recipe, window: SentenceWindow | WholeRecordingWindow, size: int) -> Recipe:
    d = base.resolved()
    d["window"] = window.model_dump(mode="json")
    d["output"] = {**d["output"], "size": int(size), "fit": "letterbox", "letterbox_rule": "centre", "stride": 1}
    d["name"] = f"{base.name}-sweep"
    return Recipe.model_validate(d)


def _label_map(maps: dict, target: str, closure: dict[str, tuple[str, ...]]) -> np.ndarray | None:
    """The map of ``target``: its own, else the max over maps of labels implying it (a
    ``pleural_effusion`` map counts for ``pleural_abnormality``, as 004's label translation)."""
    if target in maps:
        return maps[target].array
    found = [m.array for t, m in maps.items() if target in closure.get(t, (t,))]
    if not found:
        return None
    out = found[0].copy()
    for a in found[1:]:
        np.maximum(out, a, out=out)
    return out


# ------------------------------------------------------------------------------------------ worker
_STATE: dict | None = None  # per process: set by _init_worker (pool initializer, or in-process)


def _init_worker(params: dict) -> None:
    """Open the release and prepare the recipes in this process.

    Workers are started with ``spawn`` (not ``fork``): forking a process whose polars thread pool is
    running can deadlock the child, so every worker opens the release itself."""
    global _STATE
    from gazeprep.datasets import get_adapter
    from gazeprep.recipes import load_recipe
    from gazeprep.text.labels import label_defs

    base = load_recipe(params["recipe"])
    rules = params["rules"]
    defs = label_defs()  # a missing or invalid rules folder is its own one-line error, not a silent None
    if not defs.groups.get("lanfredi2023"):
        raise GazeprepError("rules/labels.yaml with the group 'lanfredi2023' is needed to compare with the ellipses")
    _STATE = {
        "profile": base.profile,  # the labeler of the swept recipe, as its build would label
        "source": base.render.source,
        "release": get_adapter(params["dataset"]).open(Path(params["root"])),
        "rules": rules,
        "size": params["size"],
        "recipes": {
            r.name: _recipe_for(base, r.window if r.window is not None else WholeRecordingWindow(), params["size"])
            for r in rules
        },
        "labels": list(defs.groups["lanfredi2023"]),
        "closure": {k: defs.closure(k) for k in defs.names},
    }


def _sweep_case(case_id: str) -> list[dict]:
    """Every rule for one case: rows (rule, case_id, target, split, has_map, iou_0 .. iou_25).

    The text stage runs once per case and the windows and maps of every rule with the pieces of
    :func:`gazeprep.pipeline.case.process_case` (same labeler profile, window rules and renderer as
    ``build-heatmaps`` with that rule)."""
    from gazeprep.evaluate.evaluator import ellipse_labels_to_targets
    from gazeprep.heatmaps.grid import OutputGrid
    from gazeprep.pipeline.case import case_text, case_windows, render_windows

    st = _STATE
    assert st is not None
    release, rules, size = st["release"], st["rules"], st["size"]
    case_row = release.cases.filter(pl.col("case_id") == case_id).row(0, named=True)
    data = release.read_case(case_id)
    events = data.tables.get(st["source"])
    words = data.tables.get("words")
    ell = data.tables.get("ellipses")
    if events is None or events.height == 0 or words is None or words.height == 0 or ell is None or ell.height == 0:
        return []
    ell = ell.filter(pl.col("certainty") > 2)
    if ell.height == 0:
        return []
    H, W = int(case_row["image_height_px"]), int(case_row["image_width_px"])
    grid = OutputGrid.letterbox(H, W, size)
    labels = st["labels"]
    mapping = ellipse_labels_to_targets(ell.get_column("source_label").unique().to_list(), labels)
    regions: dict[str, np.ndarray] = {}
    for r in ell.iter_rows(named=True):
        x0, y0 = grid.to_grid(r["xmin_px"], r["ymin_px"])
        x1, y1 = grid.to_grid(r["xmax_px"], r["ymax_px"])
        m = M.ellipse_mask(size, size, [(float(x0), float(y0), float(x1), float(y1))])
        for t in mapping.get(r["source_label"], []):
            regions[t] = regions.get(t, np.zeros((size, size), bool)) | m
    if not regions:
        return []

    reports = data.tables.get("reports")
    report_text = reports["text"][0] if reports is not None and reports.height else None
    ds = release.dataset
    text = case_text(words, report_text, dataset=ds, case_id=case_id, profile=st["profile"])
    split = case_row.get("split")
    rows: list[dict] = []
    n_t = len(M.THRESHOLDS_004)
    for rule in rules:
        recipe = st["recipes"][rule.name]
        windows = case_windows(recipe.window, text, events, dataset=ds, case_id=case_id, recipe_name=recipe.name)
        maps, _ = render_windows(events, windows, recipe, case_row)
        for t, region in sorted(regions.items()):
            rule_map: np.ndarray | None
            if rule.window is None:
                rule_map = maps["full"].array if "full" in maps else None
            else:
                rule_map = _label_map(maps, t, st["closure"])
            curve = M.iou_curve(rule_map, region) if rule_map is not None else np.zeros(n_t)
            rows.append(
                {
                    "rule": rule.name,
                    "case_id": case_id,
                    "target": t,
                    "split": split,
                    "has_map": rule_map is not None,
                    **{f"iou_{k}": float(curve[k]) for k in range(n_t)},
                }
            )
    return rows


@dataclass
class SweepResult:
    """``rows``: one row per (rule, case, target) with the IoU at every 004 threshold; ``ranking``:
    one row per rule, best first."""

    rows: pl.DataFrame
    ranking: pl.DataFrame


def _sweep_block(params: dict, ids: list[str]) -> list[list[dict]]:
    """The executor's per-block function: the rows of every case of a block (one list per case),
    in the driver, a pool worker or a Ray task (the release is opened once per process)."""
    global _STATE
    if _STATE is None or _STATE.get("params_key") != repr(params):
        _init_worker(params)
        assert _STATE is not None
        _STATE["params_key"] = repr(params)
    return [_sweep_case(cid) for cid in ids]


def rank_rules(rows: pl.DataFrame, *, split: str = "validate") -> pl.DataFrame:
    """Score every rule: per label the best-threshold mean IoU on ``split`` (all rows if that split is
    absent), then the mean over labels. Columns: rank, rule, iou, n_labels, n_pairs, coverage
    (fraction of pairs with a map), split."""
    if rows.height == 0:
        raise GazeprepError("the sweep found no case with both labelled mentions and ellipses of certainty > 2")
    use = rows.filter(pl.col("split") == split) if (rows.get_column("split") == split).any() else rows
    used_split = split if use.height < rows.height or (rows.get_column("split") == split).all() else "all"
    cols = [f"iou_{k}" for k in range(len(M.THRESHOLDS_004))]
    out = []
    for (rule,), g in use.group_by(["rule"], maintain_order=True):
        per_label = []
        for (_t,), gl in g.group_by(["target"], maintain_order=True):
            _, best = M.best_thresholds(gl.select(cols).to_numpy())
            per_label.append(best)
        out.append(
            {
                "rule": rule,
                "iou": float(np.mean(per_label)),
                "n_labels": len(per_label),
                "n_pairs": g.height,
                "coverage": float(g.select(pl.col("has_map").mean()).item()),
                "split": used_split,
            }
        )
    rank = pl.DataFrame(out).sort(["iou", "rule"], descending=[True, False])
    return rank.with_columns(pl.int_range(1, rank.height + 1).alias("rank")).select(
        "rank", "rule", "iou", "n_labels", "n_pairs", "coverage", "split"
    )


def run_sweep(
    root: str | Path,
    *,
    dataset: str = "reflacx",
    stage: str = "both",
    size: int = 128,
    workers: int = 0,
    recipe: str | Path = "reflacx-label-specific",
    rules: Sequence[SweepRule] | None = None,
    max_cases: int | None = None,
    progress: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Run the sweep over a REFLACX release in ``root`` (see the module docstring)."""
    global _STATE
    from tqdm import tqdm

    from gazeprep.datasets import get_adapter
    from gazeprep.recipes import load_recipe

    if get_adapter(dataset).transcript is None:  # the other need, ellipses, is checked once it is open
        raise GazeprepError(
            f"the window sweep needs timed dictation and ellipses (REFLACX); dataset {dataset!r} has no transcript"
        )
    root = Path(root)
    if not root.exists():
        raise GazeprepError(f"release folder not found: {root}")
    load_recipe(recipe)  # fail early on a bad recipe name
    rules = list(rules) if rules is not None else window_grid(stage)
    release = get_adapter(dataset).open(root)
    if "ellipses" not in release.tables:
        raise GazeprepError(
            f"the window sweep needs timed dictation and ellipses (REFLACX); dataset {dataset!r} has no ellipses"
        )
    ids = release.cases.filter(~pl.col("discarded").fill_null(False))["case_id"].sort().to_list()
    if max_cases:
        ids = ids[:max_cases]
    params = {"dataset": dataset, "root": str(root), "rules": rules, "size": int(size), "recipe": str(recipe)}
    # spawning a worker costs seconds (imports, labeler); keep at least 8 cases per worker
    workers = max(1, min(workers or (os.cpu_count() or 1), -(-len(ids) // 8) or 1))
    from gazeprep.pipeline.executor import make_executor

    ex = make_executor(
        executor, workers=workers, ray_address=ray_address, died_hint="rerun with fewer --workers if memory is short"
    )
    bar = tqdm(total=len(ids), desc=f"sweep: {len(rules)} rules", unit="case", disable=not progress, file=sys.stderr)
    try:
        run = ex.map_blocks(partial(_sweep_block, params), ids, progress=bar)
    finally:
        bar.close()
        _STATE = None
    if run.failed:  # Ray: a case failing on every attempt (the sweep keeps no rejects table)
        cid, reason = run.failed[0]
        raise GazeprepError(f"the sweep failed on {len(run.failed)} case(s), e.g. {cid}: {reason}")
    rows = [row for case_rows in run.results for row in case_rows]
    schema = {
        "rule": pl.Utf8,
        "case_id": pl.Utf8,
        "target": pl.Utf8,
        "split": pl.Utf8,
        "has_map": pl.Boolean,
        **{f"iou_{k}": pl.Float64 for k in range(len(M.THRESHOLDS_004))},
    }
    df = pl.DataFrame(rows, schema=schema).sort("rule", "case_id", "target")
    return SweepResult(rows=df, ranking=rank_rules(df))


def format_ranking(ranking: pl.DataFrame, top: int | None = 20) -> str:
    """Plain-text ranking table (best first)."""
    r = ranking if top is None else ranking.head(top)
    width = max(len(x) for x in r.get_column("rule").to_list() + ["rule"])
    lines = [f"{'rank':>4}  {'rule':<{width}}  {'IoU':>6}  {'labels':>6}  {'pairs':>6}  {'maps':>5}"]
    for row in r.iter_rows(named=True):
        lines.append(
            f"{row['rank']:>4}  {row['rule']:<{width}}  {row['iou']:6.3f}  {row['n_labels']:>6}  "
            f"{row['n_pairs']:>6}  {row['coverage']:5.0%}"
        )
    return "\n".join(lines)
