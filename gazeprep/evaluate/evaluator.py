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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl

from gazeprep._atomic import atomic_write_parquet, atomic_write_text
from gazeprep.errors import GazeprepError, StorageError
from gazeprep.evaluate import classification as C
from gazeprep.evaluate import metrics as M
from gazeprep.evaluate.registry import Metric, get_metric

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
CONFUSION_METRICS = ("fgiou", "bgiou", "fwiou", "miou")
LABEL_MEAN = "mean over labels"  # summary group: unweighted mean of the per-label means (n = labels)


class ExportLike(Protocol):
    tables: Mapping[str, pl.DataFrame]

    def heatmap(self, case_id: str, target: str) -> np.ndarray: ...


@dataclass
class InMemoryExport:
    """An export held in memory: ``maps[(case_id, target)] -> (H, W)`` plus canonical tables.

    The ``heatmaps`` index is built from ``maps`` when not given."""

    maps: dict[tuple[str, str], np.ndarray]
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    manifest: dict | None = None

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

    def __init__(self, export: Any, source_target: str, targets: Sequence[str]):
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
        self.tables = {
            **{
                k: _table(export, k)
                for k in ("cases", "fixations", "windows", "ellipses", "boxes", "masks")
                if _table(export, k) is not None
            },
            "heatmaps": heat,
        }
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


def _case_info(export: Any) -> dict[str, dict]:
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


def _recipe_output(export: Any):
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
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())) or "recipe"
        raise GazeprepError(
            f"{export_label(export)}: the recipe in its manifest is not valid for this gazeprep version "
            f"({where}: {first.get('msg', exc)}); cannot place its maps on the image grid"
        ) from None


def grid_for(export: Any, case_id: str, shape: tuple[int, int], info: dict | None = None):
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


def grid_to_image(grid_map: np.ndarray, grid) -> np.ndarray:
    """Nearest-neighbour map from an output grid back to original-image pixels ``(H, W)``: image pixel
    ``(r, c)`` takes the grid pixel nearest to ``grid.to_grid(c, r)`` (004 upscales heatmaps to the
    ellipse resolution with nearest-neighbour interpolation)."""
    H, W = grid.image_height_px, grid.image_width_px
    gx, _ = grid.to_grid(np.arange(W), np.zeros(W))
    _, gy = grid.to_grid(np.zeros(H), np.arange(H))
    cols = np.clip(np.rint(gx).astype(np.int64), 0, grid.width - 1)
    rows = np.clip(np.rint(gy).astype(np.int64), 0, grid.height - 1)
    return np.asarray(grid_map)[rows[:, None], cols[None, :]]


def _native_grid(shape: tuple[int, int]):
    """The native grid of an image of ``shape`` (height, width)."""
    from gazeprep.heatmaps.grid import OutputGrid

    return OutputGrid.native(int(shape[0]), int(shape[1]))


def regrid(a: np.ndarray, src, dst) -> np.ndarray:
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
    grid,
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
    organ_masks: Callable[[str], dict[str, np.ndarray] | None] | None = None,
    organ_map: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
) -> EvalResult:
    """Compare the maps of ``pred`` with the ground truth ``gt`` (see the module docstring).

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
    """
    defaults = {"ellipses": DEFAULT_ELLIPSE_METRICS, "organs": DEFAULT_ORGAN_METRICS}.get(
        reference, DEFAULT_MAP_METRICS
    )
    names = list(metrics) if metrics else list(defaults)
    # image-level AUC / accuracy come from the prediction's class scores (gazeprep.evaluate.classification)
    class_metrics = [n for n in names if n in C.CLASSIFICATION_METRICS] if metrics else list(C.CLASSIFICATION_METRICS)
    names = [n for n in names if n not in C.CLASSIFICATION_METRICS]
    scores = C.read_class_scores(pred)
    if metrics and class_metrics and scores is None:
        raise GazeprepError(
            f"{', '.join(class_metrics)}: image-level metrics need classifier scores "
            f"(tables/class_scores.parquet, written by gazeprep predict); {export_label(pred)} has none"
        )
    class_summary = (
        C.classification_summary(scores, metrics=class_metrics, by=by, n_boot=n_boot, seed=seed)
        if scores is not None and class_metrics
        else None
    )
    if not names and class_summary is not None:  # only image-level metrics asked for: no map pairing
        empty = pl.DataFrame(schema={"case_id": pl.Utf8, "target": pl.Utf8})
        return EvalResult(
            pairs=empty, summary=class_summary, unpaired=empty.with_columns(pl.lit(None, pl.Utf8).alias("only_in"))
        )
    mets: list[Metric] = [get_metric(n) for n in names]
    notes: list[str] = []

    if reference in ("ellipses", "organs"):
        bad = [m.name for m in mets if m.kind != "region"]
        if bad:
            raise GazeprepError(f"{reference} mode compares maps with regions; not region metrics: {', '.join(bad)}")
    if reference == "organs" and organ_masks is None:
        raise GazeprepError("organ mode needs organ masks (organ_masks=, CLI --organ-masks DIR)")
    omap = {k: tuple(v) for k, v in (organ_map or DEFAULT_ORGAN_MAP).items()}
    image_kind = [m.name for m in mets if m.kind == "image"]
    if image_kind:
        raise GazeprepError(
            f"{', '.join(image_kind)}: image-level metrics need classifier scores, not maps; "
            "use gazeprep.evaluate.metrics.bootstrap_auc"
        )

    if pred_target is not None:
        if reference == "ellipses":
            e = _table(gt, "ellipses")
            labels = e.get_column("source_label").unique().to_list() if e is not None else []
            ref_targets = sorted(
                {t for ts in ellipse_labels_to_targets(labels, _default_labels()).values() for t in ts}
            )
        else:
            gi = _table(gt, "heatmaps")
            ref_targets = gi.get_column("target").unique().to_list() if gi is not None else []
        pred = _OneTargetForAll(pred, pred_target, ref_targets)
        notes.append(f"prediction map {pred_target!r} used for every reference target")
    if gt_target is not None:
        pi = _table(pred, "heatmaps")
        gt = _OneTargetForAll(gt, gt_target, pi.get_column("target").unique().to_list() if pi is not None else [])
        notes.append(f"reference map {gt_target!r} used for every predicted target")
    pidx = _table(pred, "heatmaps")
    if pidx is None:
        raise GazeprepError("prediction export has no 'heatmaps' table")
    pkeys = pidx.select("case_id", "target").unique()
    if reference == "maps":
        gidx = _table(gt, "heatmaps")
        if gidx is None:
            raise GazeprepError("ground-truth export has no 'heatmaps' table")
        gkeys = gidx.select("case_id", "target").unique()
    elif reference == "organs":
        gkeys = pkeys.filter(pl.col("target").is_in(list(omap)))
    else:
        gkeys = _ellipse_keys(gt, pkeys)
    if targets:
        tset = set(targets)
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

    ginfo = _case_info(gt)
    pinfo = _case_info(pred)
    gfix = _table(gt, "fixations")
    gwin = _table(gt, "windows")
    need_fix = any(m.kind == "fixations" for m in mets)
    if need_fix and gfix is None:
        raise GazeprepError("NSS / AUC-Judd need the ground-truth export's 'fixations' table")
    ell = _ellipse_frame(gt, paired.get_column("target").unique().to_list()) if reference == "ellipses" else None
    iou_sweep = any(m.name == "iou" for m in mets) and iou_threshold == "validated"

    rows: list[dict] = []
    organ_cache: dict[str, dict] = {}
    missing_masks = 0
    curves: list[np.ndarray] = []
    cms: list[np.ndarray] = []
    it = paired.iter_rows()
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=paired.height, desc="evaluate", unit="map")
    for case_id, target in it:
        p = np.asarray(pred.heatmap(case_id, target), dtype=np.float64)
        require_finite_map(p, pred, "prediction", case_id, target)
        info = ginfo.get(case_id) or pinfo.get(case_id) or {}
        row: dict[str, Any] = {"case_id": case_id, "target": target, "split": info.get("split")}
        if reference == "ellipses":
            grid = grid_for(pred, case_id, p.shape, info)
            if grid is None:
                raise GazeprepError(f"case {case_id!r}: image size unknown (cases table), cannot place ellipses")
            e = ell.filter((pl.col("case_id") == case_id) & (pl.col("target") == target))
            boxes = e.select("xmin_px", "ymin_px", "xmax_px", "ymax_px", "certainty").to_numpy().astype(np.float64)
            if not np.isfinite(boxes[boxes[:, 4] > 2, :4]).all():
                raise GazeprepError(
                    f"ground truth export {export_label(gt)}: case {case_id!r}, target {target!r}: an ellipse "
                    "(certainty > 2) has a missing or non-finite coordinate in the 'ellipses' table"
                )
            if ellipse_resolution == "grid" and not grid.is_native:
                boxes[:, 0], boxes[:, 1] = grid.to_grid(boxes[:, 0], boxes[:, 1])
                boxes[:, 2], boxes[:, 3] = grid.to_grid(boxes[:, 2], boxes[:, 3])
                region = M.ellipse_mask(grid.height, grid.width, boxes)
                p_use = p
            else:
                region = M.ellipse_mask(grid.image_height_px, grid.image_width_px, boxes)
                p_use = grid_to_image(p, grid) if not grid.is_native else p
            ref_map = region.astype(np.float64)
        elif reference == "organs":
            grid = grid_for(pred, case_id, p.shape, info)
            if grid is None:
                raise GazeprepError(f"case {case_id!r}: image size unknown (cases table), cannot place organ masks")
            if case_id not in organ_cache:
                organ_cache.clear()
                organ_cache[case_id] = organ_masks(case_id)  # type: ignore[misc]
            masks = organ_cache[case_id] or {}
            want = [masks[k] for k in omap[target] if k in masks]
            if not want:
                for m in mets:
                    row[m.name] = float("nan")
                if iou_sweep:
                    curves.append(np.full(len(M.THRESHOLDS_004), np.nan))
                rows.append(row)
                missing_masks += 1
                continue
            union = np.logical_or.reduce([np.asarray(x, dtype=bool) for x in want])
            # 002: the organ coordinates are scaled to the CAM's resolution (the CAM is not resized)
            region = regrid(union, _native_grid(union.shape), grid) > 0.5 if not grid.is_native else union
            ref_map = region.astype(np.float64)
            p_use = p
        else:
            g = np.asarray(gt.heatmap(case_id, target), dtype=np.float64)
            require_finite_map(g, gt, "ground truth", case_id, target)
            ref_map = g
            region = g > gt_threshold
            p_use = p
            if p.shape != g.shape:  # same image, different grids: map through the image geometry
                pg = grid_for(pred, case_id, p.shape, pinfo.get(case_id) or info)
                gg = grid_for(gt, case_id, g.shape, info)
                if pg is not None and gg is not None:
                    p_use = regrid(p, pg, gg)
        for m in mets:
            if m.kind == "map":
                row[m.name] = m(p_use, ref_map)
            elif m.kind == "region":
                if m.name == "iou" and iou_threshold != "validated":
                    row[m.name] = m(p_use, region, threshold=float(iou_threshold))
                elif m.name == "iou":
                    continue
                else:
                    row[m.name] = m(p_use, region)
            elif m.kind == "binary":
                gb = M.binarize_iai(ref_map) if gt_binarize == "iai" else ref_map > float(gt_binarize)
                pb = M.match_shape(p_use, gb.shape) > pred_threshold
                row[m.name] = m(pb, gb)
            elif m.kind == "fixations":
                grid = grid_for(gt, case_id, ref_map.shape, info)
                if grid is None:
                    row[m.name] = float("nan")
                    continue
                fx = gfix.filter(pl.col("case_id") == case_id)
                wins = None
                if gwin is not None and target != "full":
                    wins = gwin.filter((pl.col("case_id") == case_id) & (pl.col("target") == target))
                    wins = wins if wins.height else None
                row[m.name] = m(p_use, fixation_map(fx, wins, grid))
        if iou_sweep:
            curves.append(M.iou_curve(p_use, region))
        if any(m.name in CONFUSION_METRICS for m in mets):
            gb = M.binarize_iai(ref_map) if gt_binarize == "iai" else ref_map > float(gt_binarize)
            cms.append(M.confusion_2class(M.match_shape(p_use, gb.shape) > pred_threshold, gb))
        rows.append(row)

    if missing_masks:
        notes.append(f"{missing_masks} pairs without an organ mask (metrics NaN, left out of the means)")
    pairs = pl.DataFrame(rows, infer_schema_length=None)
    thresholds: dict[str, tuple[float, str]] = {}
    if iou_sweep:
        pairs, thresholds, msg = _apply_validated_thresholds(pairs, np.stack(curves))
        notes.extend(msg)
    elif any(m.name == "iou" for m in mets):
        thresholds = {t: (float(iou_threshold), "fixed") for t in pairs.get_column("target").unique().to_list()}
    cm_arr = np.stack(cms) if cms else np.zeros((0, 2, 2), dtype=np.int64)
    summary = _summarise(pairs, mets, by, thresholds, cm_arr, iou_average, n_boot, seed)
    if class_summary is not None and class_summary.height:  # AUC / accuracy rows beside the map metrics
        summary = pl.concat([summary, class_summary], how="vertical_relaxed")
    return EvalResult(pairs=pairs, summary=summary, unpaired=unpaired, notes=notes)


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
    pairs: pl.DataFrame, curves: np.ndarray
) -> tuple[pl.DataFrame, dict[str, tuple[float, str]], list[str]]:
    """004: per target, pick the threshold on ``validate`` pairs and report IoU on ``test`` pairs."""
    notes: list[str] = []
    split = pairs.get_column("split").to_list() if "split" in pairs.columns else [None] * pairs.height
    target = pairs.get_column("target").to_list()
    split_arr = np.array([s or "" for s in split])
    tgt_arr = np.array(target)
    iou = np.full(pairs.height, np.nan)
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
        iou[sel] = curves[sel, k]
        use |= report
        thresholds[t] = (thr, where)
    if any(w == "same data" for _, w in thresholds.values()):
        notes.append(
            "IoU threshold chosen on the evaluated pairs themselves for some labels (no validate + test "
            "splits): optimistic; 004 chooses on validation and reports test"
        )
    pairs = pairs.with_columns(
        pl.Series("iou", iou),
        pl.Series("iou_reported", use),
        pl.Series("iou_threshold", [thresholds[t][0] for t in target]),
    )
    return pairs, thresholds, notes


def _summarise(
    pairs: pl.DataFrame,
    mets: Sequence[Metric],
    by: str,
    thresholds: dict[str, tuple[float, str]],
    cms: np.ndarray,
    iou_average: str,
    n_boot: int,
    seed: int,
) -> pl.DataFrame:
    out: list[dict] = []
    groups: list[tuple[str, np.ndarray]] = [("all", np.ones(pairs.height, dtype=bool))]
    if by == "label":
        tg = pairs.get_column("target").to_numpy()
        groups += [(t, tg == t) for t in sorted(set(tg.tolist()))]
    reported = pairs.get_column("iou_reported").to_numpy() if "iou_reported" in pairs.columns else None
    for gname, sel in groups:
        for m in mets:
            if m.name not in pairs.columns:
                continue
            s = sel.copy()
            thr, where = None, None
            if m.name == "iou":
                if reported is not None:
                    s &= reported
                if gname != "all":
                    thr, where = thresholds.get(gname, (None, None))
                else:
                    fixed = {t for t, _ in thresholds.values()} if thresholds else set()
                    where = "fixed" if reported is None else "per label"
                    thr = next(iter(fixed)) if reported is None and len(fixed) == 1 else None
            v = pairs.get_column(m.name).cast(pl.Float64).to_numpy()[s]
            if m.name in CONFUSION_METRICS and iou_average == "dataset" and cms.shape[0] == pairs.height:
                sub = cms[s]
                mean = M.ious_from_confusion(sub.sum(axis=0))[m.name] if sub.shape[0] else float("nan")
                lo, hi = _bootstrap_confusion(sub, m.name, min(n_boot, 300), seed)
                avg = "dataset"
            else:
                finite = v[~np.isnan(v)]
                mean = float(finite.mean()) if finite.size else float("nan")
                _, lo, hi = M.bootstrap_mean(v, n_boot=n_boot, seed=seed)
                avg = "image"
            out.append(
                {
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
            )
    if by == "label" and len(groups) > 2:  # 004 reports IoU averaged over labels
        for m in mets:
            vals = [r["mean"] for r in out if r["metric"] == m.name and r["group"] != "all" and not np.isnan(r["mean"])]
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
    return pl.DataFrame(
        out,
        schema=C.SUMMARY_SCHEMA,
    )


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
        if r["metric"] == "iou" and r["threshold"] is not None:
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


def write_table(df: pl.DataFrame, path) -> None:
    """Write ``df`` as Parquet (``.parquet``) or CSV (``.csv``), atomically
    (:mod:`gazeprep._atomic`; an I/O fault is a :class:`~gazeprep.errors.StorageError` naming ``path``)."""
    from pathlib import Path

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
