"""Evaluate one export against another: pair maps, compute metrics per pair, aggregate with CIs.

An *export* is anything with the interface of :func:`gazeprep.load_export`'s result:

* ``tables``: mapping of table name -> polars frame (``heatmaps`` index with ``case_id``, ``target``;
  optionally ``cases``, ``ellipses``, ``fixations``, ``windows``, ``masks``);
* ``heatmap(case_id, target) -> float32 (H, W)``;
* optionally ``manifest`` (a dict with the resolved ``recipe``), used to know the output grid.

:class:`InMemoryExport` provides that interface for arrays already in memory (tests, the window
sweep, notebooks).

Pairing and references (what each metric kind compares the prediction with):

* maps are paired by ``(case_id, target)``; pairs present on one side only are counted and listed
  in the result's ``unpaired`` frame, never silently dropped;
* ``map`` metrics: the ground-truth map itself. When the two maps differ in shape and the image
  size is known (``cases`` table), the prediction is resampled from its grid to the reference's
  through the image geometry (:func:`regrid`, nearest; letterbox padding is not stretched);
  otherwise it is resized to the reference shape (nearest, the rule of :mod:`gazeprep.evaluate.metrics`);
* ``region`` metrics (IoU, DiffGradCAM, EHR-AUC, interpretability): ``gt > gt_threshold`` (default
  0.15, 004's ET threshold), or, in ellipse mode, the REFLACX ellipses of that label with certainty
  > 2, rasterised at the original image size, the prediction mapped back from its grid to the image
  by nearest neighbour (004 section 2.9 / 3.2);
* in organ mode (002), ``region`` metrics use the anatomy mask of the organ each label belongs to
  (cardiomegaly -> heart, pneumonia -> lungs), mapped onto the prediction's grid;
* ``binary`` metrics (fg/bg/fw IoU): prediction ``> pred_threshold`` (default 0.5) against the
  ground truth binarised by I-AI's unique-level quantile (``gt_binarize="iai"``) or a threshold;
  aggregated at the dataset level (confusion matrices summed, as I-AI's evaluator), with the
  per-image mean as option;
* ``fixations`` metrics (NSS, AUC-Judd): the binary map of the ground-truth export's fixations that
  overlap the target's windows (``t_end > w_start and t_start <= w_end``), rounded to grid pixels.

Bad values: a map holding NaN or +-inf (in either export) stops the evaluation with one
:class:`~gazeprep.errors.GazeprepError` naming the export, the case, the target and which side
(prediction or ground truth) - no metric is defined on it, and averaging finite numbers computed from
it would hide the fault.

Class scores: when the prediction export carries ``tables/class_scores.parquet`` (``gazeprep
predict``), the summary also gets per-label and macro AUC and, where the truth is one class per case,
accuracy, with bootstrap CIs over cases (:mod:`gazeprep.evaluate.classification`); ``metrics`` may
name ``auc`` / ``accuracy``.

IoU threshold (004): with ``iou_threshold="validated"`` (default) the threshold is chosen per label
on the ``validate`` split (best mean IoU over ``THRESHOLDS_004``) and applied to the ``test`` split;
when the data have no such split it is chosen on all pairs and the summary says so in its
``threshold_from`` column. A number fixes the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
import polars as pl

from gazeprep._atomic import atomic_write_parquet, atomic_write_text
from gazeprep.errors import GazeprepError, StorageError
from gazeprep.evaluate import classification as C
from gazeprep.evaluate import metrics as M
from gazeprep.evaluate.registry import Metric, get_metric

if TYPE_CHECKING:
    from gazeprep.heatmaps.grid import OutputGrid
    from gazeprep.recipes import OutputSpec

DEFAULT_MAP_METRICS = ("kld", "cc", "hs", "sim", "ssim", "psnr", "l1", "l2", "iou", "fgiou", "bgiou", "fwiou")
DEFAULT_ELLIPSE_METRICS = ("iou",)
DEFAULT_ORGAN_METRICS = ("interpretability", "diffgradcam", "ehr_auc")
# 002 (GG-CAM eq. 12): the organ each label belongs to; targets -> anatomy structures.
DEFAULT_ORGAN_MAP: dict[str, tuple[str, ...]] = {
    "enlarged_cardiac_silhouette": ("heart",),
    "cardiomegaly": ("heart",),
    "pneumonia": ("left_lung", "right_lung"),
    "heart": ("heart",),
    "left_lung": ("left_lung",),
    "right_lung": ("right_lung",),
}
LABEL_MEAN = "mean over labels"  # summary group: unweighted mean of the per-label means (n = labels)


#: ``case_id -> {structure: bool mask (H, W) at the original image size}``, or None without masks.
OrganMasks = Callable[[str], "dict[str, np.ndarray] | None"]
#: One row of a ``cases`` table (``case_id``, ``split``, image size, ``dataset``), by column name.
CaseInfo = dict[str, Any]


class ExportLike(Protocol):
    """What the evaluator reads from an export (see the module docstring)."""

    @property
    def tables(self) -> Mapping[str, pl.DataFrame]: ...

    def heatmap(self, case_id: str, target: str) -> np.ndarray: ...


@dataclass
class InMemoryExport:
    """An export held in memory: ``maps[(case_id, target)] -> (H, W)`` plus canonical tables.

    The ``heatmaps`` index is built from ``maps`` when not given."""

    maps: dict[tuple[str, str], np.ndarray]
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if "heatmaps" not in self.tables:
            keys = sorted(self.maps)
            self.tables = {
                **self.tables,
                "heatmaps": pl.DataFrame(
                    {"case_id": [k[0] for k in keys], "target": [k[1] for k in keys]},
                    schema={"case_id": pl.Utf8, "target": pl.Utf8},
                ),
            }

    def heatmap(self, case_id: str, target: str) -> np.ndarray:
        try:
            return np.asarray(self.maps[(case_id, target)], dtype=np.float32)
        except KeyError:
            raise GazeprepError(f"no heatmap for case {case_id!r}, target {target!r}") from None


class _OneTargetForAll:
    """View of an export where the map of ``source_target`` stands for every target in ``targets``
    (e.g. the whole-recording map ``full`` compared with each label's reference)."""

    def __init__(self, export: ExportLike, source_target: str, targets: Sequence[str]):
        self._ex = export
        self._src = source_target
        idx = _table(export, "heatmaps")
        if idx is None:
            raise GazeprepError("export has no 'heatmaps' table")
        cases = idx.filter(pl.col("target") == source_target).get_column("case_id").unique().sort().to_list()
        if not cases:
            have = sorted(idx.get_column("target").unique().to_list())[:10]
            raise GazeprepError(f"no map for target {source_target!r} (targets: {have})")
        ts = sorted(set(targets))
        heat = pl.DataFrame(
            {"case_id": [c for c in cases for _ in ts], "target": [t for _ in cases for t in ts]},
            schema={"case_id": pl.Utf8, "target": pl.Utf8},
        )
        self.tables: dict[str, pl.DataFrame] = {
            k: df
            for k in ("cases", "fixations", "windows", "ellipses", "boxes", "masks")
            if (df := _table(export, k)) is not None
        }
        self.tables["heatmaps"] = heat
        self.manifest = getattr(export, "manifest", None)
        self.path = getattr(export, "path", None)

    @property
    def source_target(self) -> str:
        """The stored target whose map stands for every target."""
        return self._src

    def heatmap(self, case_id: str, target: str) -> np.ndarray:
        return self._ex.heatmap(case_id, self._src)


@dataclass
class EvalResult:
    """``pairs``: one row per (case_id, target) with a column per metric; ``summary``: one row per
    (group, metric) with n, mean, 95% bootstrap CI (and the IoU threshold); ``unpaired``: maps found
    on one side only."""

    pairs: pl.DataFrame
    summary: pl.DataFrame
    unpaired: pl.DataFrame
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# helpers


def _table(export: Any, name: str) -> pl.DataFrame | None:
    t = getattr(export, "tables", {}) or {}
    df = t.get(name) if hasattr(t, "get") else None
    return df if isinstance(df, pl.DataFrame) else None


def _case_info(export: Any) -> dict[str, CaseInfo]:
    cases = _table(export, "cases")
    if cases is None or cases.height == 0:
        return {}
    cols = [c for c in ("case_id", "split", "image_height_px", "image_width_px", "dataset") if c in cases.columns]
    return {r["case_id"]: r for r in cases.select(cols).unique("case_id", keep="first").iter_rows(named=True)}


def export_label(export: Any) -> str:
    """How messages name an export: its folder, or ``(in memory)`` for one without a ``path``."""
    path = getattr(export, "path", None)
    return str(path) if path is not None else "(in memory)"


def require_finite_map(a: np.ndarray, export: Any, side: str, case_id: str, target: str) -> np.ndarray:
    """Return ``a`` if every value is finite, else raise one :class:`GazeprepError` line naming the
    export (:func:`export_label`), ``side`` (``"prediction"`` / ``"ground truth"``), the case and the
    stored target (with the compared target when a single map stands for every target)."""
    bad = M.non_finite_counts(a)
    if bad is None:
        return a
    stored = getattr(export, "source_target", None)
    tgt = f"target {target!r}" if stored is None or stored == target else f"target {stored!r} (compared as {target!r})"
    raise GazeprepError(
        f"{side} export {export_label(export)}: case {case_id!r}, {tgt}: "
        f"{M.describe_non_finite(*bad, int(np.asarray(a).size))}; no metric is defined on non-finite "
        "values, fix or rebuild that map"
    )


def _recipe_output(export: Any) -> OutputSpec | None:
    """The output spec of the recipe in ``export``'s manifest, or ``None`` when it has no recipe.

    A recipe that does not validate is an error naming the export (guessing its grid instead would
    misplace every map)."""
    from pydantic import ValidationError

    from gazeprep.recipes import Recipe

    man = getattr(export, "manifest", None)
    if not isinstance(man, dict) or "recipe" not in man:
        return None
    try:
        return Recipe.from_stored(man["recipe"]).output
    except ValidationError as exc:
        errors = exc.errors()
        where = (".".join(str(x) for x in errors[0]["loc"]) if errors else "") or "recipe"
        msg = errors[0]["msg"] if errors else str(exc)
        raise GazeprepError(
            f"{export_label(export)}: the recipe in its manifest is not valid for this gazeprep version "
            f"({where}: {msg}); cannot place its maps on the image grid"
        ) from None


def grid_for(export: Any, case_id: str, shape: tuple[int, ...], info: CaseInfo | None = None) -> OutputGrid | None:
    """The :class:`~gazeprep.heatmaps.grid.OutputGrid` a map of ``shape`` of this case lies on, or
    ``None`` when the image size is unknown.

    The manifest's recipe decides when present; otherwise a map of the image's size is native and
    any other shape is taken as centred letterboxing (the recipes' default)."""
    from gazeprep.heatmaps.grid import OutputGrid

    info = info if info is not None else _case_info(export).get(case_id)
    if not info or not info.get("image_height_px") or not info.get("image_width_px"):
        return None
    H, W = int(info["image_height_px"]), int(info["image_width_px"])
    if tuple(shape) == (H, W):
        return OutputGrid.native(H, W)
    spec = _recipe_output(export)
    if spec is not None:
        g = OutputGrid.from_spec(spec, H, W)
        if g.shape == tuple(shape):
            return g
    return OutputGrid.letterbox(H, W, int(shape[0]), int(shape[1]))


def grid_to_image(grid_map: np.ndarray, grid: OutputGrid) -> np.ndarray:
    """Nearest-neighbour map from an output grid back to original-image pixels ``(H, W)``: image pixel
    ``(r, c)`` takes the grid pixel nearest to ``grid.to_grid(c, r)`` (004 upscales heatmaps to the
    ellipse resolution with nearest-neighbour interpolation)."""
    H, W = grid.image_height_px, grid.image_width_px
    gx, _ = grid.to_grid(np.arange(W), np.zeros(W))
    _, gy = grid.to_grid(np.zeros(H), np.arange(H))
    cols = np.clip(np.rint(gx).astype(np.int64), 0, grid.width - 1)
    rows = np.clip(np.rint(gy).astype(np.int64), 0, grid.height - 1)
    return np.asarray(grid_map)[rows[:, None], cols[None, :]]


def _native_grid(shape: tuple[int, ...]) -> OutputGrid:
    """The native grid of an image of ``shape`` (height, width)."""
    from gazeprep.heatmaps.grid import OutputGrid

    return OutputGrid.native(int(shape[0]), int(shape[1]))


def regrid(a: np.ndarray, src: OutputGrid, dst: OutputGrid) -> np.ndarray:
    """Resample a map from output grid ``src`` to output grid ``dst`` of the same image (nearest):
    each ``dst`` pixel takes the ``src`` pixel nearest to the same image position; positions off
    ``src`` (e.g. its letterbox padding) read 0. Used when two exports of one case differ in grid
    (e.g. 512 letterboxed vs native), where a plain resize would misalign the padding."""
    x_img, _ = dst.from_grid(np.arange(dst.width), np.zeros(dst.width))
    _, y_img = dst.from_grid(np.zeros(dst.height), np.arange(dst.height))
    gx, _ = src.to_grid(x_img, np.zeros_like(x_img))
    _, gy = src.to_grid(np.zeros_like(y_img), y_img)
    c = np.rint(gx).astype(np.int64)
    r = np.rint(gy).astype(np.int64)
    okc = (c >= 0) & (c < src.width)
    okr = (r >= 0) & (r < src.height)
    out = np.asarray(a)[np.clip(r, 0, src.height - 1)[:, None], np.clip(c, 0, src.width - 1)[None, :]].astype(
        np.float64
    )
    out[~okr, :] = 0.0
    out[:, ~okc] = 0.0
    return out


def fixation_map(
    fixations: pl.DataFrame,
    windows: pl.DataFrame | None,
    grid: OutputGrid,
    *,
    counts: bool = False,
) -> np.ndarray:
    """Binary (or count) fixation map on ``grid`` of the fixations overlapping any of ``windows``.

    ``windows``: rows with ``t_start_s``/``t_end_s`` (null = open); ``None`` keeps every fixation.
    Positions are mapped with ``grid.to_grid`` and rounded; points off the grid are dropped."""
    out = np.zeros(grid.shape, dtype=np.float64)
    if fixations.height == 0:
        return out
    x = fixations.get_column("x_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
    y = fixations.get_column("y_px").cast(pl.Float64).fill_null(np.nan).to_numpy()
    keep = np.isfinite(x) & np.isfinite(y)
    if windows is not None and windows.height and {"t_start_s", "t_end_s"} <= set(fixations.columns):
        t0 = fixations.get_column("t_start_s").cast(pl.Float64).fill_null(np.nan).to_numpy()
        t1 = fixations.get_column("t_end_s").cast(pl.Float64).fill_null(np.nan).to_numpy()
        ws = windows.get_column("t_start_s").cast(pl.Float64).fill_null(-np.inf).to_numpy()
        we = windows.get_column("t_end_s").cast(pl.Float64).fill_null(np.inf).to_numpy()
        inside = ((t1[:, None] > ws[None, :]) & (t0[:, None] <= we[None, :])).any(axis=1)
        keep &= inside
    gx, gy = grid.to_grid(x[keep], y[keep])
    c, r = np.rint(gx).astype(np.int64), np.rint(gy).astype(np.int64)
    ok = (c >= 0) & (c < grid.width) & (r >= 0) & (r < grid.height)
    np.add.at(out, (r[ok], c[ok]), 1.0)
    return out if counts else (out > 0).astype(np.float64)


def ellipse_labels_to_targets(source_labels: Sequence[str], targets: Sequence[str]) -> dict[str, list[str]]:
    """Which targets each REFLACX ellipse label stands for, from ``rules/labels.yaml`` alone (the
    shipped rules, or the folder ``GAZEPREP_RULES_DIR`` names).

    A target matches when it spells (:func:`gazeprep.text.labels.normalise_label`: case and
    punctuation ignored) the ellipse label itself, or one of the canonical labels the
    ``reflacx_metadata`` source maps it to or those imply, by id, display name or alias: ``Pleural
    effusion`` -> ``pleural_effusion``, ``pleural_abnormality``; ``Pulmonary edema`` -> ``edema``,
    ``opacity`` (004's ``Edema``, ``Opacity``); ``Enlarged cardiac silhouette`` -> 004's
    ``Cardiomegaly`` (an alias). A missing or invalid rules folder is the :class:`GazeprepError` of
    :mod:`gazeprep.paths` / :mod:`gazeprep.text.rules`."""
    from gazeprep.text.labels import label_spellings, normalise_label, source_label_closure

    by_norm = {normalise_label(t): t for t in targets}
    closure = source_label_closure("reflacx_metadata")
    out: dict[str, list[str]] = {}
    for s in source_labels:
        hits: list[str] = []
        names = [str(s)] + [n for lid in closure.get(str(s).lower(), ()) for n in label_spellings(lid)]
        for cand in names:
            t = by_norm.get(normalise_label(cand))
            if t is not None and t not in hits:
                hits.append(t)
        out[s] = hits
    return out


def _bootstrap_confusion(cms: np.ndarray, key: str, n_boot: int, seed: int) -> tuple[float, float]:
    """95% CI of a dataset-level IoU (``key`` of :func:`~gazeprep.evaluate.metrics.ious_from_confusion`
    on the summed matrices) over resampled pairs: :func:`~gazeprep.evaluate.metrics.bootstrap_ci`."""
    _, lo, hi = M.bootstrap_ci(lambda c: M.ious_from_confusion(c.sum(axis=0))[key], cms, n_boot=n_boot, seed=seed)
    return lo, hi


# --------------------------------------------------------------------------------------------------
# main entry


@dataclass(frozen=True)
class EvalOptions:
    """The options of :func:`evaluate_exports`, grouped (each documented there)."""

    metrics: tuple[str, ...] | None = None
    by: Literal["label", "none"] = "label"
    reference: Literal["maps", "ellipses", "organs"] = "maps"
    targets: tuple[str, ...] | None = None
    gt_threshold: float = 0.15
    pred_threshold: float = 0.5
    gt_binarize: Literal["iai"] | float = "iai"
    iou_threshold: Literal["validated"] | float = "validated"
    iou_average: Literal["dataset", "image"] = "dataset"
    n_boot: int = 1000
    seed: int = 0
    pred_target: str | None = None
    gt_target: str | None = None
    ellipse_resolution: Literal["image", "grid"] = "image"
    organ_masks: OrganMasks | None = None
    organ_map: Mapping[str, Sequence[str]] | None = None
    progress: bool = False

    @property
    def organ_structures(self) -> dict[str, tuple[str, ...]]:
        """Target -> anatomy structures of organ mode (``organ_map`` or :data:`DEFAULT_ORGAN_MAP`)."""
        return {k: tuple(v) for k, v in (self.organ_map or DEFAULT_ORGAN_MAP).items()}

    @property
    def validated(self) -> bool:
        """Whether thresholded metrics choose their threshold per label on ``validate`` (004)."""
        return self.iou_threshold == "validated"

    def binarize_gt(self, ref_map: np.ndarray) -> np.ndarray:
        """The reference foreground of binary metrics: I-AI's unique-level quantile or a threshold."""
        return M.binarize_iai(ref_map) if self.gt_binarize == "iai" else ref_map > float(self.gt_binarize)


def evaluate_exports(
    pred: ExportLike,
    gt: ExportLike,
    *,
    metrics: Sequence[str] | None = None,
    by: Literal["label", "none"] = "label",
    reference: Literal["maps", "ellipses", "organs"] = "maps",
    targets: Sequence[str] | None = None,
    gt_threshold: float = 0.15,
    pred_threshold: float = 0.5,
    gt_binarize: Literal["iai"] | float = "iai",
    iou_threshold: Literal["validated"] | float = "validated",
    iou_average: Literal["dataset", "image"] = "dataset",
    n_boot: int = 1000,
    seed: int = 0,
    pred_target: str | None = None,
    gt_target: str | None = None,
    ellipse_resolution: Literal["image", "grid"] = "image",
    organ_masks: OrganMasks | None = None,
    organ_map: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
) -> EvalResult:
    """Compare the maps of ``pred`` with the ground truth ``gt`` (see the module docstring).

    The keyword arguments are those of :class:`EvalOptions`; :func:`evaluate_with` takes them grouped.

    Parameters
    ----------
    metrics:
        Registered metric names (default: :data:`DEFAULT_MAP_METRICS`, or ``("iou",)`` in ellipse mode).
    by:
        ``label``: summary rows per target and ``all``; ``none``: only ``all``.
    reference:
        ``maps``: the ground-truth export's heatmaps; ``ellipses``: its REFLACX ellipses (certainty > 2)
        of the pair's label (004 section 3.2); only region metrics apply.
    targets:
        Restrict to these targets (default: all paired targets).
    gt_threshold, pred_threshold, gt_binarize:
        Region of region metrics (``gt > gt_threshold``); foregrounds of binary metrics
        (``pred > pred_threshold`` against ``gt_binarize``: ``"iai"`` or a threshold).
    iou_threshold, iou_average:
        Threshold of thresholded metrics (IoU): ``"validated"`` (chosen per label on ``validate``) or
        a number; fg/bg/fw IoU at the ``dataset`` level (confusion summed) or the ``image`` mean.
    n_boot, seed:
        Percentile-bootstrap resamples over pairs for the 95% CIs (seeded, reproducible).
    ellipse_resolution:
        ``image`` (004): ellipses rasterised at the original image size, the prediction mapped up to
        it (nearest); ``grid``: ellipses mapped onto the prediction's grid (much faster on DICOM-size
        images; differs only along the ellipse borders).
    organ_masks, organ_map:
        ``reference="organs"`` (002): ``organ_masks(case_id)`` gives ``{structure: bool (H, W)}`` at the
        original image size (e.g. :func:`gazeprep.anatomy.load_anatomy_masks`); ``organ_map`` says
        which structures each target belongs to (default :data:`DEFAULT_ORGAN_MAP`: cardiomegaly ->
        heart, pneumonia -> both lungs). The mask is mapped onto the prediction's grid (002 scales the
        organ coordinates to the CAM); default metrics interpretability, DiffGradCAM, EHR-AUC.
    pred_target, gt_target:
        Use that one map of each case (e.g. ``full``, the whole-recording map) for every target of
        the other side: the baseline of 004's window comparison, or label maps vs the full map.
    progress:
        Show a progress bar over the pairs.
    """
    options = EvalOptions(
        metrics=tuple(metrics) if metrics is not None else None,
        by=by,
        reference=reference,
        targets=tuple(targets) if targets is not None else None,
        gt_threshold=gt_threshold,
        pred_threshold=pred_threshold,
        gt_binarize=gt_binarize,
        iou_threshold=iou_threshold,
        iou_average=iou_average,
        n_boot=n_boot,
        seed=seed,
        pred_target=pred_target,
        gt_target=gt_target,
        ellipse_resolution=ellipse_resolution,
        organ_masks=organ_masks,
        organ_map=organ_map,
        progress=progress,
    )
    return evaluate_with(pred, gt, options)


def evaluate_with(pred: ExportLike, gt: ExportLike, options: EvalOptions) -> EvalResult:
    """:func:`evaluate_exports` with its options in one :class:`EvalOptions`.

    Stages: choose the metrics (image-level class metrics apart), stand one map for every target
    when asked, pair the two sides, score every pair against its reference, then summarise."""
    names, class_summary = _class_metrics(pred, options)
    if not names and class_summary is not None:  # only image-level metrics asked for: no map pairing
        empty = pl.DataFrame(schema={"case_id": pl.Utf8, "target": pl.Utf8})
        return EvalResult(
            pairs=empty, summary=class_summary, unpaired=empty.with_columns(pl.lit(None, pl.Utf8).alias("only_in"))
        )
    mets = _map_metrics(names, options)
    notes: list[str] = []
    pred, gt = _one_map_for_all(pred, gt, options, notes)
    paired, unpaired = _pair_keys(pred, gt, options)
    scorer = _PairScorer(pred, gt, mets, options, _reference_for(pred, gt, paired, options))
    scorer.score_all(paired)
    if scorer.missing_masks:
        notes.append(f"{scorer.missing_masks} pairs without an organ mask (metrics NaN, left out of the means)")
    pairs = pl.DataFrame(scorer.rows, infer_schema_length=None)
    pairs, thresholds = _thresholds(pairs, mets, scorer.curves, options, notes)
    cms = np.stack(scorer.cms) if scorer.cms else np.zeros((0, 2, 2), dtype=np.int64)
    summary = _summarise(pairs, mets, thresholds, cms, options)
    if class_summary is not None and class_summary.height:  # AUC / accuracy rows beside the map metrics
        summary = pl.concat([summary, class_summary], how="vertical_relaxed")
    return EvalResult(pairs=pairs, summary=summary, unpaired=unpaired, notes=notes)


# --------------------------------------------------------------------------------------------------
# stages of evaluate_with


def _class_metrics(pred: ExportLike, opts: EvalOptions) -> tuple[list[str], pl.DataFrame | None]:
    """Split the asked metrics: the map metric names, and the summary of the image-level ones (AUC /
    accuracy from the prediction's class scores, :mod:`gazeprep.evaluate.classification`), None
    when there are no scores or none is asked for. Asking for one without scores is an error."""
    defaults = {"ellipses": DEFAULT_ELLIPSE_METRICS, "organs": DEFAULT_ORGAN_METRICS}.get(
        opts.reference, DEFAULT_MAP_METRICS
    )
    names = list(opts.metrics) if opts.metrics else list(defaults)
    class_metrics = (
        [n for n in names if n in C.CLASSIFICATION_METRICS] if opts.metrics else list(C.CLASSIFICATION_METRICS)
    )
    names = [n for n in names if n not in C.CLASSIFICATION_METRICS]
    scores = C.read_class_scores(pred)
    if opts.metrics and class_metrics and scores is None:
        raise GazeprepError(
            f"{', '.join(class_metrics)}: image-level metrics need classifier scores "
            f"(tables/class_scores.parquet, written by gazeprep predict); {export_label(pred)} has none"
        )
    if scores is None or not class_metrics:
        return names, None
    return names, C.classification_summary(
        scores, metrics=class_metrics, by=opts.by, n_boot=opts.n_boot, seed=opts.seed
    )


def _map_metrics(names: Sequence[str], opts: EvalOptions) -> list[Metric]:
    """The registered map metrics ``names``, checked against the reference mode."""
    mets = [get_metric(n) for n in names]
    if opts.reference in ("ellipses", "organs"):
        bad = [m.name for m in mets if m.kind != "region"]
        if bad:
            raise GazeprepError(
                f"{opts.reference} mode compares maps with regions; not region metrics: {', '.join(bad)}"
            )
    if opts.reference == "organs" and opts.organ_masks is None:
        raise GazeprepError("organ mode needs organ masks (organ_masks=, CLI --organ-masks DIR)")
    image_kind = [m.name for m in mets if m.kind == "image"]
    if image_kind:
        raise GazeprepError(
            f"{', '.join(image_kind)}: image-level metrics need classifier scores, not maps; "
            "use gazeprep.evaluate.metrics.bootstrap_auc"
        )
    return mets


def _one_map_for_all(
    pred: ExportLike, gt: ExportLike, opts: EvalOptions, notes: list[str]
) -> tuple[ExportLike, ExportLike]:
    """``pred_target`` / ``gt_target``: views where that one map of each case stands for every
    target of the other side (:class:`_OneTargetForAll`); a note says so."""
    if opts.pred_target is not None:
        if opts.reference == "ellipses":
            e = _table(gt, "ellipses")
            labels = e.get_column("source_label").unique().to_list() if e is not None else []
            ref_targets = sorted(
                {t for ts in ellipse_labels_to_targets(labels, _default_labels()).values() for t in ts}
            )
        else:
            gi = _table(gt, "heatmaps")
            ref_targets = gi.get_column("target").unique().to_list() if gi is not None else []
        pred = _OneTargetForAll(pred, opts.pred_target, ref_targets)
        notes.append(f"prediction map {opts.pred_target!r} used for every reference target")
    if opts.gt_target is not None:
        pi = _table(pred, "heatmaps")
        gt = _OneTargetForAll(gt, opts.gt_target, pi.get_column("target").unique().to_list() if pi is not None else [])
        notes.append(f"reference map {opts.gt_target!r} used for every predicted target")
    return pred, gt


def _pair_keys(pred: ExportLike, gt: ExportLike, opts: EvalOptions) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(paired, unpaired)``: the ``(case_id, target)`` keys on both sides, sorted, and those on one
    side only (``only_in``: ``pred`` / ``gt``). The reference side's keys are its heatmaps, the
    predicted targets that have an organ, or the targets with an ellipse of certainty > 2."""
    pidx = _table(pred, "heatmaps")
    if pidx is None:
        raise GazeprepError("prediction export has no 'heatmaps' table")
    pkeys = pidx.select("case_id", "target").unique()
    if opts.reference == "maps":
        gidx = _table(gt, "heatmaps")
        if gidx is None:
            raise GazeprepError("ground-truth export has no 'heatmaps' table")
        gkeys = gidx.select("case_id", "target").unique()
    elif opts.reference == "organs":
        gkeys = pkeys.filter(pl.col("target").is_in(list(opts.organ_structures)))
    else:
        gkeys = _ellipse_keys(gt, pkeys)
    if opts.targets:
        tset = set(opts.targets)
        pkeys = pkeys.filter(pl.col("target").is_in(tset))
        gkeys = gkeys.filter(pl.col("target").is_in(tset))
    paired = pkeys.join(gkeys, on=["case_id", "target"], how="inner").sort("case_id", "target")
    unpaired = pl.concat(
        [
            pkeys.join(gkeys, on=["case_id", "target"], how="anti").with_columns(pl.lit("pred").alias("only_in")),
            gkeys.join(pkeys, on=["case_id", "target"], how="anti").with_columns(pl.lit("gt").alias("only_in")),
        ]
    ).sort("only_in", "case_id", "target")
    if paired.height == 0:
        raise GazeprepError(
            f"no (case_id, target) pair is present in both exports ({pkeys.height} predicted, {gkeys.height} reference)"
        )
    return paired, unpaired


class _Reference(NamedTuple):
    """What one pair's prediction is compared with."""

    pred: np.ndarray  # the prediction on the reference's pixels, float64
    ref_map: np.ndarray  # map metrics' reference, float64 (the region as 0 / 1 in ellipse and organ mode)
    region: np.ndarray  # region metrics' reference, bool


#: ``(case_id, target, prediction (H, W), case info) -> reference``; None when the case has none.
_ReferenceFn = Callable[[str, str, np.ndarray, CaseInfo], "_Reference | None"]


def _reference_for(pred: ExportLike, gt: ExportLike, paired: pl.DataFrame, opts: EvalOptions) -> _ReferenceFn:
    """The reference of each pair in ``opts.reference`` mode (see the module docstring)."""
    if opts.reference == "ellipses":
        return _EllipseReference(pred, gt, _ellipse_frame(gt, paired.get_column("target").unique().to_list()), opts)
    if opts.reference == "organs":
        assert opts.organ_masks is not None  # checked by _map_metrics
        return _OrganReference(pred, opts.organ_masks, opts.organ_structures)
    return _MapReference(pred, gt, _case_info(pred), opts.gt_threshold)


@dataclass
class _MapReference:
    """``maps``: the ground-truth map; a prediction on another grid of the same image is resampled
    onto the reference's grid through the image geometry (:func:`regrid`)."""

    pred_export: ExportLike
    gt: ExportLike
    pinfo: dict[str, CaseInfo]
    gt_threshold: float

    def __call__(self, case_id: str, target: str, p: np.ndarray, info: CaseInfo) -> _Reference:
        g = np.asarray(self.gt.heatmap(case_id, target), dtype=np.float64)
        require_finite_map(g, self.gt, "ground truth", case_id, target)
        p_use = p
        if p.shape != g.shape:  # same image, different grids: map through the image geometry
            pg = grid_for(self.pred_export, case_id, p.shape, self.pinfo.get(case_id) or info)
            gg = grid_for(self.gt, case_id, g.shape, info)
            if pg is not None and gg is not None:
                p_use = regrid(p, pg, gg)
        return _Reference(p_use, g, g > self.gt_threshold)


@dataclass
class _EllipseReference:
    """``ellipses`` (004 section 3.2): the ellipses of the pair's label with certainty > 2,
    rasterised at the image size (the prediction mapped up to it) or on the prediction's grid."""

    pred_export: ExportLike
    gt: ExportLike
    ellipses: pl.DataFrame  # the ground truth's ellipses with a target column
    opts: EvalOptions

    def __call__(self, case_id: str, target: str, p: np.ndarray, info: CaseInfo) -> _Reference:
        grid = grid_for(self.pred_export, case_id, p.shape, info)
        if grid is None:
            raise GazeprepError(f"case {case_id!r}: image size unknown (cases table), cannot place ellipses")
        e = self.ellipses.filter((pl.col("case_id") == case_id) & (pl.col("target") == target))
        boxes = e.select("xmin_px", "ymin_px", "xmax_px", "ymax_px", "certainty").to_numpy().astype(np.float64)
        if not np.isfinite(boxes[boxes[:, 4] > 2, :4]).all():
            raise GazeprepError(
                f"ground truth export {export_label(self.gt)}: case {case_id!r}, target {target!r}: an ellipse "
                "(certainty > 2) has a missing or non-finite coordinate in the 'ellipses' table"
            )
        if self.opts.ellipse_resolution == "grid" and not grid.is_native:
            boxes[:, 0], boxes[:, 1] = grid.to_grid(boxes[:, 0], boxes[:, 1])
            boxes[:, 2], boxes[:, 3] = grid.to_grid(boxes[:, 2], boxes[:, 3])
            region = M.ellipse_mask(grid.height, grid.width, boxes)
            p_use = p
        else:
            region = M.ellipse_mask(grid.image_height_px, grid.image_width_px, boxes)
            p_use = grid_to_image(p, grid) if not grid.is_native else p
        return _Reference(p_use, region.astype(np.float64), region)


@dataclass
class _OrganReference:
    """``organs`` (002): the union of the masks of the structures the target belongs to, scaled to
    the prediction's grid (the CAM is not resized); None when the case has none of them."""

    pred_export: ExportLike
    masks_of: OrganMasks
    structures: dict[str, tuple[str, ...]]
    _cache: dict[str, dict[str, np.ndarray] | None] = field(default_factory=dict)  # the last case's masks

    def __call__(self, case_id: str, target: str, p: np.ndarray, info: CaseInfo) -> _Reference | None:
        grid = grid_for(self.pred_export, case_id, p.shape, info)
        if grid is None:
            raise GazeprepError(f"case {case_id!r}: image size unknown (cases table), cannot place organ masks")
        if case_id not in self._cache:
            self._cache.clear()
            self._cache[case_id] = self.masks_of(case_id)
        masks = self._cache[case_id] or {}
        want = [masks[k] for k in self.structures[target] if k in masks]
        if not want:
            return None
        union = np.logical_or.reduce([np.asarray(x, dtype=bool) for x in want])
        region = regrid(union, _native_grid(union.shape), grid) > 0.5 if not grid.is_native else union
        return _Reference(p, region.astype(np.float64), region)


class _PairScorer:
    """Scores pairs one by one: a row of metric values per pair, plus the per-pair threshold curves
    of thresholded metrics (``curves[name]``) and confusion matrices of dataset-level metrics."""

    def __init__(
        self, pred: ExportLike, gt: ExportLike, mets: Sequence[Metric], opts: EvalOptions, reference: _ReferenceFn
    ):
        self.pred, self.gt, self.mets, self.opts, self.reference = pred, gt, list(mets), opts, reference
        self.ginfo, self.pinfo = _case_info(gt), _case_info(pred)
        fixations = _table(gt, "fixations")
        if fixations is None and any(m.kind == "fixations" for m in mets):
            raise GazeprepError("NSS / AUC-Judd need the ground-truth export's 'fixations' table")
        self.fixations = fixations if fixations is not None else pl.DataFrame()  # read by fixation metrics only
        self.windows = _table(gt, "windows")
        # thresholded metrics whose threshold is chosen later per label from their curves
        self.swept = {m.name: m.threshold_curve for m in self.mets if m.threshold_curve is not None and opts.validated}
        self.confusion = any(m.confusion_key is not None for m in self.mets)
        self.rows: list[dict[str, Any]] = []
        self.curves: dict[str, list[np.ndarray]] = {name: [] for name in self.swept}
        self.cms: list[np.ndarray] = []
        self.missing_masks = 0

    def score_all(self, paired: pl.DataFrame) -> None:
        """Score every ``(case_id, target)`` row of ``paired``, in order."""
        it: Iterable[tuple[Any, ...]] = paired.iter_rows()
        if self.opts.progress:
            from tqdm import tqdm

            it = tqdm(it, total=paired.height, desc="evaluate", unit="map")
        for case_id, target in it:
            self.score(case_id, target)

    def score(self, case_id: str, target: str) -> None:
        """Append the row of one pair (NaN metrics when the case has no reference, e.g. no organ mask)."""
        p = np.asarray(self.pred.heatmap(case_id, target), dtype=np.float64)
        require_finite_map(p, self.pred, "prediction", case_id, target)
        info = self.ginfo.get(case_id) or self.pinfo.get(case_id) or {}
        row: dict[str, Any] = {"case_id": case_id, "target": target, "split": info.get("split")}
        self.rows.append(row)
        ref = self.reference(case_id, target, p, info)
        if ref is None:
            row.update({m.name: float("nan") for m in self.mets})
            for name in self.swept:
                self.curves[name].append(np.full(len(M.THRESHOLDS_004), np.nan))
            self.missing_masks += 1
            return
        for m in self.mets:
            value = self._value(m, ref, case_id, target, info)
            if value is not None:
                row[m.name] = value
        for name, curve in self.swept.items():
            self.curves[name].append(curve(ref.pred, ref.region))
        if self.confusion:
            gb = self.opts.binarize_gt(ref.ref_map)
            self.cms.append(M.confusion_2class(M.match_shape(ref.pred, gb.shape) > self.opts.pred_threshold, gb))

    def _value(self, m: Metric, ref: _Reference, case_id: str, target: str, info: CaseInfo) -> float | None:
        """Metric ``m`` of one pair, by what its kind compares; None when it is set later (a threshold
        chosen per label)."""
        if m.kind == "map":
            return m(ref.pred, ref.ref_map)
        if m.kind == "region":
            if m.threshold_curve is None:
                return m(ref.pred, ref.region)
            if self.opts.validated:
                return None
            return m(ref.pred, ref.region, threshold=float(self.opts.iou_threshold))
        if m.kind == "binary":
            gb = self.opts.binarize_gt(ref.ref_map)
            return m(M.match_shape(ref.pred, gb.shape) > self.opts.pred_threshold, gb)
        # fixations: the binary map of the reference's fixations inside the target's windows
        grid = grid_for(self.gt, case_id, ref.ref_map.shape, info)
        if grid is None:
            return float("nan")
        fx = self.fixations.filter(pl.col("case_id") == case_id)
        wins = None
        if self.windows is not None and target != "full":
            wins = self.windows.filter((pl.col("case_id") == case_id) & (pl.col("target") == target))
            wins = wins if wins.height else None
        return m(ref.pred, fixation_map(fx, wins, grid))


#: metric name -> target -> (threshold, where it was chosen: ``validate``, ``same data``, ``fixed``)
_Thresholds = dict[str, dict[str, tuple[float, str]]]


def _thresholds(
    pairs: pl.DataFrame,
    mets: Sequence[Metric],
    curves: Mapping[str, list[np.ndarray]],
    opts: EvalOptions,
    notes: list[str],
) -> tuple[pl.DataFrame, _Thresholds]:
    """The threshold of each thresholded metric per target: fixed, or chosen per label from the
    pairs' curves (:func:`_apply_validated_thresholds`, which also fills in the metric's column)."""
    thresholds: _Thresholds = {}
    for m in mets:
        if m.threshold_curve is None:
            continue
        if opts.validated:
            pairs, thresholds[m.name] = _apply_validated_thresholds(pairs, m.name, np.stack(curves[m.name]))
        else:
            fixed = (float(opts.iou_threshold), "fixed")
            thresholds[m.name] = {t: fixed for t in pairs.get_column("target").unique().to_list()}
    if any(w == "same data" for per in thresholds.values() for _, w in per.values()):
        notes.append(
            "IoU threshold chosen on the evaluated pairs themselves for some labels (no validate + test "
            "splits): optimistic; 004 chooses on validation and reports test"
        )
    return pairs, thresholds


def _default_labels() -> list[str]:
    """Canonical label ids of ``rules/labels.yaml`` (errors as :func:`ellipse_labels_to_targets`)."""
    from gazeprep.text.labels import label_ids

    return list(label_ids())


def _ellipse_frame(gt: ExportLike, targets: Sequence[str]) -> pl.DataFrame:
    """The ground truth's ellipses with a ``target`` column (one row per ellipse and target)."""
    e = _table(gt, "ellipses")
    if e is None or e.height == 0:
        raise GazeprepError("ellipse mode: the ground-truth export has no 'ellipses' rows")
    return _ellipses_with_targets(e, targets)


def _ellipses_with_targets(e: pl.DataFrame, targets: Sequence[str]) -> pl.DataFrame:
    labels = e.get_column("source_label").unique().to_list()
    mapping = ellipse_labels_to_targets(labels, targets)
    pairs = [(s, t) for s, ts in mapping.items() for t in ts]
    if not pairs:
        return e.with_columns(pl.lit(None, dtype=pl.Utf8).alias("target")).head(0)
    mp = pl.DataFrame({"source_label": [a for a, _ in pairs], "target": [b for _, b in pairs]})
    return e.join(mp, on="source_label", how="inner")


def _ellipse_keys(gt: ExportLike, pkeys: pl.DataFrame) -> pl.DataFrame:
    """(case_id, target) of the reference in ellipse mode: targets with at least one ellipse of
    certainty > 2 (004 evaluates IoU only over images whose label has an ellipse)."""
    e = _table(gt, "ellipses")
    if e is None or e.height == 0:
        raise GazeprepError("ellipse mode: the ground-truth export has no 'ellipses' rows")
    targets = pkeys.get_column("target").unique().to_list()
    e = _ellipses_with_targets(e.filter(pl.col("certainty") > 2), targets)
    return e.select("case_id", "target").unique()


def _apply_validated_thresholds(
    pairs: pl.DataFrame, name: str, curves: np.ndarray
) -> tuple[pl.DataFrame, dict[str, tuple[float, str]]]:
    """004: per target, pick the threshold of metric ``name`` on ``validate`` pairs and report it on
    ``test`` pairs (on all pairs, ``same data``, without both splits).

    ``curves``: ``(n_pairs, n_thresholds)``, the metric at each of ``THRESHOLDS_004``. Sets the
    ``name`` column to the value at the chosen threshold and adds ``<name>_reported`` (the pair
    counts in the summary) and ``<name>_threshold``."""
    split = pairs.get_column("split").to_list() if "split" in pairs.columns else [None] * pairs.height
    target = pairs.get_column("target").to_list()
    split_arr = np.array([s or "" for s in split])
    tgt_arr = np.array(target)
    values = np.full(pairs.height, np.nan)
    use = np.zeros(pairs.height, dtype=bool)
    thresholds: dict[str, tuple[float, str]] = {}
    for t in sorted(set(target)):
        sel = tgt_arr == t
        val = sel & (split_arr == "validate")
        test = sel & (split_arr == "test")
        if val.any() and test.any():
            thr, _ = M.best_thresholds(curves[val])
            where = "validate"
            report = test
        else:
            thr, _ = M.best_thresholds(curves[sel])
            where = "same data"
            report = sel
        if np.isnan(thr):  # no valid reference for this label
            thresholds[t] = (float("nan"), where)
            continue
        k = M.THRESHOLDS_004.index(thr)
        values[sel] = curves[sel, k]
        use |= report
        thresholds[t] = (thr, where)
    pairs = pairs.with_columns(
        pl.Series(name, values),
        pl.Series(f"{name}_reported", use),
        pl.Series(f"{name}_threshold", [thresholds[t][0] for t in target]),
    )
    return pairs, thresholds


def _summarise(
    pairs: pl.DataFrame,
    mets: Sequence[Metric],
    thresholds: _Thresholds,
    cms: np.ndarray,
    opts: EvalOptions,
) -> pl.DataFrame:
    """One row per (group, metric): ``all``, each target with ``by="label"``, and the unweighted
    mean over labels (:data:`LABEL_MEAN`, 004 reports IoU so) when there are several labels."""
    groups: list[tuple[str, np.ndarray]] = [("all", np.ones(pairs.height, dtype=bool))]
    if opts.by == "label":
        tg = pairs.get_column("target").to_numpy()
        groups += [(t, tg == t) for t in sorted(set(tg.tolist()))]
    out = [
        _summary_row(pairs, m, gname, sel, thresholds, cms, opts)
        for gname, sel in groups
        for m in mets
        if m.name in pairs.columns
    ]
    if opts.by == "label" and len(groups) > 2:
        out += _label_means(out, mets)
    return pl.DataFrame(out, schema=C.SUMMARY_SCHEMA)


def _summary_row(
    pairs: pl.DataFrame,
    m: Metric,
    gname: str,
    sel: np.ndarray,
    thresholds: _Thresholds,
    cms: np.ndarray,
    opts: EvalOptions,
) -> dict[str, Any]:
    """Mean and 95% bootstrap CI of metric ``m`` over the pairs ``sel`` of group ``gname``: the
    dataset-level value of summed confusion matrices, or the mean over images (NaN left out). A
    thresholded metric counts only its reported pairs and states its threshold."""
    s = sel.copy()
    thr: float | None = None
    where: str | None = None
    if m.threshold_curve is not None:
        per_target = thresholds.get(m.name, {})
        reported_col = f"{m.name}_reported"
        validated = reported_col in pairs.columns
        if validated:
            s &= pairs.get_column(reported_col).to_numpy()
        if gname != "all":
            thr, where = per_target.get(gname, (None, None))
        else:
            fixed = {t for t, _ in per_target.values()}
            where = "per label" if validated else "fixed"
            thr = next(iter(fixed)) if not validated and len(fixed) == 1 else None
    v = pairs.get_column(m.name).cast(pl.Float64).to_numpy()[s]
    if m.confusion_key is not None and opts.iou_average == "dataset" and cms.shape[0] == pairs.height:
        sub = cms[s]
        mean = M.ious_from_confusion(sub.sum(axis=0))[m.confusion_key] if sub.shape[0] else float("nan")
        lo, hi = _bootstrap_confusion(sub, m.confusion_key, min(opts.n_boot, 300), opts.seed)
        avg = "dataset"
    else:
        finite = v[~np.isnan(v)]
        mean = float(finite.mean()) if finite.size else float("nan")
        _, lo, hi = M.bootstrap_mean(v, n_boot=opts.n_boot, seed=opts.seed)
        avg = "image"
    return {
        "group": gname,
        "metric": m.name,
        "n": int((~np.isnan(v)).sum()),
        "mean": mean,
        "ci_low": lo,
        "ci_high": hi,
        "higher_is_better": m.higher_is_better,
        "average": avg,
        "threshold": thr,
        "threshold_from": where,
    }


def _label_means(rows: Sequence[dict[str, Any]], mets: Sequence[Metric]) -> list[dict[str, Any]]:
    """Rows of :data:`LABEL_MEAN`: per metric, the unweighted mean of the per-label means (n = labels
    with a finite mean)."""
    out: list[dict[str, Any]] = []
    for m in mets:
        vals = [r["mean"] for r in rows if r["metric"] == m.name and r["group"] != "all" and not np.isnan(r["mean"])]
        if vals:
            out.append(
                {
                    "group": LABEL_MEAN,
                    "metric": m.name,
                    "n": len(vals),
                    "mean": float(np.mean(vals)),
                    "ci_low": None,
                    "ci_high": None,
                    "higher_is_better": m.higher_is_better,
                    "average": "labels",
                    "threshold": None,
                    "threshold_from": None,
                }
            )
    return out


def format_summary(summary: pl.DataFrame) -> str:
    """A plain-text table: one row per group, one column per metric, ``mean [low, high]``."""
    if summary.height == 0:
        return "(no results)"
    metrics_order = list(dict.fromkeys(summary.get_column("metric").to_list()))
    groups = list(dict.fromkeys(summary.get_column("group").to_list()))
    cells: dict[tuple[str, str], str] = {}
    ns: dict[str, int] = {}
    for r in summary.iter_rows(named=True):
        v = r["mean"]
        txt = "nan" if v is None or np.isnan(v) else f"{v:.3f}"
        if r["ci_low"] is not None and not np.isnan(r["ci_low"]):
            txt += f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        if r["threshold"] is not None:  # only thresholded metrics (IoU) have one
            txt += f" @{r['threshold']:g}"
        cells[(r["group"], r["metric"])] = txt
        ns[r["group"]] = max(ns.get(r["group"], 0), r["n"])
    for r in summary.iter_rows(named=True):  # say so where a metric used fewer pairs than its row
        if r["n"] < ns[r["group"]]:
            cells[(r["group"], r["metric"])] += f" (n={r['n']})"
    arrows = {r["metric"]: ("↑" if r["higher_is_better"] else "↓") for r in summary.iter_rows(named=True)}
    header = ["group", "n"] + [f"{m}{arrows[m]}" for m in metrics_order]
    body = [[g, str(ns[g])] + [cells.get((g, m), "") for m in metrics_order] for g in groups]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def write_table(df: pl.DataFrame, path: str | Path) -> None:
    """Write ``df`` as Parquet (``.parquet``) or CSV (``.csv``), atomically
    (:mod:`gazeprep._atomic`; an I/O fault is a :class:`~gazeprep.errors.StorageError` naming ``path``)."""
    p = Path(path)
    if p.suffix not in (".parquet", ".csv"):
        raise GazeprepError(f"{p}: output must end in .parquet or .csv")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError.from_os_error(exc, p.parent) from exc
    if p.suffix == ".parquet":
        atomic_write_parquet(df, p)
    else:
        atomic_write_text(p, df.write_csv())
