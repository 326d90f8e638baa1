"""CLI of the evaluation area: ``gazeprep evaluate``, ``gazeprep preview``, ``gazeprep sweep-windows``.

Command bodies parse options and call :mod:`gazeprep.evaluate`."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import polars as pl
import typer

from gazeprep.commands import Executor, missing_option, out_file, out_folder, quiet_option, usage_error
from gazeprep.errors import GazeprepError

if TYPE_CHECKING:
    import numpy as np

    from gazeprep.evaluate.evaluator import EvalResult
    from gazeprep.export.reader import Export

#: ``case_id -> {structure: bool mask (H, W)}``, or None when the case has no masks.
OrganLoader = Callable[[str], "dict[str, np.ndarray] | None"]


def _open_export(path: Path, what: str) -> Export:
    """The export at ``path``; a GazeprepError naming ``what`` (reference, prediction) when absent."""
    if not Path(path).exists():
        raise GazeprepError(f"{what} export {path} does not exist")
    try:
        from gazeprep.export import load_export
    except ImportError as exc:  # the export layer is missing from this installation
        raise GazeprepError(f"cannot read exports: {exc}") from None
    return load_export(path)


class By(str, Enum):
    """Rows of the summary table."""

    label = "label"
    none = "none"


class IouAverage(str, Enum):
    """How fg/bg/fw IoU are averaged."""

    dataset = "dataset"
    image = "image"


class OrganSource(str, Enum):
    """Where the organ masks of 002's organ mode come from."""

    anatomy = "anatomy"
    egd = "egd"


class SweepStage(str, Enum):
    """004 section 2.8 grids."""

    one = "1"
    two = "2"
    both = "both"


class SweepDataset(str, Enum):
    """Releases with sentence timings and radiologists' ellipses."""

    reflacx = "reflacx"


def _threshold(value: str | None) -> str | float | None:
    """``--iou-threshold``: 'validated' or a number (usage error otherwise)."""
    if value is None or value == "validated":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"'validated' or a number, got {value!r}") from None


def _binarize(value: str | None) -> str | float | None:
    """``--gt-binarize``: 'iai' or a number (usage error otherwise)."""
    if value is None or value == "iai":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"'iai' or a number, got {value!r}") from None


def _table_path(value: Path | None) -> Path | None:
    """An output table path: ``.parquet`` or ``.csv`` (usage error otherwise)."""
    value = out_file(value)
    if value is not None and value.suffix not in (".parquet", ".csv"):
        raise typer.BadParameter(f"{str(value)!r}: a table file must end in .parquet or .csv")
    return value


def _parse_organ_map(text: str) -> dict[str, tuple[str, ...]]:
    """``'a=heart, b=left_lung+right_lung'`` -> ``{'a': ('heart',), 'b': ('left_lung', 'right_lung')}``."""
    out: dict[str, tuple[str, ...]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise usage_error(f"expected target=structure[+structure], got {item.strip()!r}", "--organ-map")
        k, v = item.split("=", 1)
        out[k.strip()] = tuple(x.strip() for x in v.split("+") if x.strip())
    return out


def _organ_loader(export: Export, folder: Path, source: str, omap: dict[str, tuple[str, ...]] | None) -> OrganLoader:
    """``case_id -> {structure: bool (H, W)}`` from anatomy predictions or EGD-CXR masks (None if missing)."""
    from gazeprep.evaluate.evaluator import DEFAULT_ORGAN_MAP

    if not folder.exists():
        raise GazeprepError(f"organ masks folder {folder} does not exist")
    cases = export.tables["cases"] if "cases" in export.tables else None
    if cases is None or "image_id" not in cases.columns:
        raise GazeprepError("organ mode needs the reference export's cases table (image_id, image size)")
    info = {
        r["case_id"]: r
        for r in cases.select("case_id", "image_id", "image_height_px", "image_width_px").iter_rows(named=True)
    }
    structures = tuple(sorted({x for v in (omap or DEFAULT_ORGAN_MAP).values() for x in v}))

    def load(case_id: str) -> dict[str, np.ndarray] | None:
        from gazeprep.anatomy import load_anatomy_masks, load_egd_anatomy_masks

        r = info.get(case_id)
        if not r or not r["image_id"] or not r["image_height_px"]:
            return None
        fn = load_anatomy_masks if source == "anatomy" else load_egd_anatomy_masks
        shape = (int(r["image_height_px"]), int(r["image_width_px"]))
        try:
            return fn(folder, r["image_id"], shape, structures=structures)
        except GazeprepError:  # some structures missing: take what there is, one by one
            got: dict[str, np.ndarray] = {}
            for st in structures:
                try:
                    got.update(fn(folder, r["image_id"], shape, structures=(st,)))
                except GazeprepError:
                    pass
            return got or None

    return load


# --- options of `gazeprep evaluate` (one alias per flag keeps the command's signature short) ---

_PredExport = Annotated[
    Path | None, typer.Option("--pred", help="Export with the maps under test (model output or another ground truth).")
]
_GtExport = Annotated[
    Path | None, typer.Option("--gt", help="Reference export (ground-truth heatmaps, ellipses, fixations).")
]
_Metrics = Annotated[
    str | None,
    typer.Option(
        "--metrics",
        help="Comma-separated metric names (see --list-metrics). Default: every map metric, or iou with --gt-ellipses.",
    ),
]
_ByOpt = Annotated[By, typer.Option("--by", help="'label': rows per target and overall; 'none': overall only.")]
_SummaryOut = Annotated[
    Path | None,
    typer.Option("--out", callback=_table_path, help="Write the summary table here (.parquet or .csv)."),
]
_PairsOut = Annotated[
    Path | None,
    typer.Option("--pairs-out", callback=_table_path, help="Write the per-pair metric table here (.parquet or .csv)."),
]
_GtEllipses = Annotated[
    bool,
    typer.Option(
        "--gt-ellipses",
        help="Compare with the reference export's REFLACX ellipses (certainty > 2) instead of its maps (004 section 3.2).",
    ),
]
_EllipseGrid = Annotated[
    bool,
    typer.Option(
        "--ellipse-grid",
        help="With --gt-ellipses: rasterise ellipses on the map's grid instead of upscaling maps to the image (faster).",
    ),
]
_OrganMasksDir = Annotated[
    Path | None,
    typer.Option(
        "--organ-masks",
        help="002 organ mode: anatomy masks (`gazeprep anatomy predict` output, or the EGD-CXR root with --organ-source egd); CAMs vs the organ of each label.",
    ),
]
_OrganSourceOpt = Annotated[
    OrganSource,
    typer.Option("--organ-source", help="'anatomy' (predicted masks) or 'egd' (the EGD-CXR release's PNG masks)."),
]
_OrganMapOpt = Annotated[
    str | None,
    typer.Option(
        "--organ-map",
        help="Target -> structures, e.g. 'enlarged_cardiac_silhouette=heart,pneumonia=left_lung+right_lung' (default: 002's).",
    ),
]
_Targets = Annotated[
    str | None, typer.Option("--targets", help="Comma-separated targets to evaluate (default: all paired).")
]
_GtThreshold = Annotated[
    float,
    typer.Option(
        "--gt-threshold", help="Reference map > this is the region for IoU / DiffGradCAM / EHR-AUC / interpretability."
    ),
]
_PredThreshold = Annotated[
    float, typer.Option("--pred-threshold", help="Prediction > this is its foreground for fg/bg/fw IoU.")
]
_GtBinarize = Annotated[
    str,
    typer.Option(
        "--gt-binarize",
        callback=_binarize,
        metavar="iai|NUMBER",
        help="Reference foreground for fg/bg/fw IoU: 'iai' (unique-level quantile) or a threshold.",
    ),
]
_IouThreshold = Annotated[
    str,
    typer.Option(
        "--iou-threshold",
        callback=_threshold,
        metavar="validated|NUMBER",
        help="'validated' (004: best on validate, reported on test) or a fixed threshold.",
    ),
]
_IouAverageOpt = Annotated[
    IouAverage,
    typer.Option(
        "--iou-average", help="fg/bg/fw IoU: 'dataset' (confusion summed, I-AI) or 'image' (mean of per-image IoUs)."
    ),
]
_NBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the 95% CIs.", min=10)]
_Seed = Annotated[int, typer.Option("--seed", help="Bootstrap seed.")]
_PredTarget = Annotated[
    str | None,
    typer.Option("--pred-target", help="Use this map of each predicted case (e.g. 'full') for every reference target."),
]
_GtTarget = Annotated[
    str | None,
    typer.Option("--gt-target", help="Use this map of each reference case (e.g. 'full') for every predicted target."),
]
_ListMetrics = Annotated[bool, typer.Option("--list-metrics", help="List the metric names and exit.")]


def evaluate_cmd(
    pred: _PredExport = None,
    gt: _GtExport = None,
    metrics: _Metrics = None,
    by: _ByOpt = By.label,
    out: _SummaryOut = None,
    pairs_out: _PairsOut = None,
    gt_ellipses: _GtEllipses = False,
    ellipse_grid: _EllipseGrid = False,
    organ_masks: _OrganMasksDir = None,
    organ_source: _OrganSourceOpt = OrganSource.anatomy,
    organ_map: _OrganMapOpt = None,
    targets: _Targets = None,
    gt_threshold: _GtThreshold = 0.15,
    pred_threshold: _PredThreshold = 0.5,
    gt_binarize: _GtBinarize = "iai",
    iou_threshold: _IouThreshold = "validated",
    iou_average: _IouAverageOpt = IouAverage.dataset,
    n_boot: _NBoot = 1000,
    seed: _Seed = 0,
    pred_target: _PredTarget = None,
    gt_target: _GtTarget = None,
    list_metrics_: _ListMetrics = False,
    quiet: bool = quiet_option(),
) -> None:
    """Compare the maps of two exports: per-pair metrics, then mean and 95% bootstrap CI per label and overall."""
    from gazeprep.evaluate import evaluator as E

    if list_metrics_:
        _print_metrics()
        raise typer.Exit()
    if pred is None:
        raise missing_option("--pred")
    if gt is None:
        raise missing_option("--gt")
    if organ_masks is not None and gt_ellipses:
        raise usage_error("--organ-masks and --gt-ellipses are different references; give one", "--gt-ellipses")
    omap = _parse_organ_map(organ_map) if organ_map else None
    pe = _open_export(pred, "prediction")
    ge = _open_export(gt, "reference")
    masks_fn = _organ_loader(ge, organ_masks, organ_source.value, omap) if organ_masks is not None else None
    res = E.evaluate_exports(
        pe,
        ge,
        metrics=_names(metrics),
        by=by.value,
        reference="ellipses" if gt_ellipses else ("organs" if organ_masks is not None else "maps"),
        organ_masks=masks_fn,
        organ_map=omap,
        targets=_names(targets),
        gt_threshold=gt_threshold,
        pred_threshold=pred_threshold,
        gt_binarize="iai" if gt_binarize == "iai" else float(gt_binarize),  # the callback made it a float
        iou_threshold="validated" if iou_threshold == "validated" else float(iou_threshold),
        iou_average=iou_average.value,
        n_boot=n_boot,
        seed=seed,
        pred_target=pred_target,
        gt_target=gt_target,
        ellipse_resolution="grid" if ellipse_grid else "image",
        progress=not quiet,
    )
    _report(res, out, pairs_out)


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list of names (blanks dropped); None when not given."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _print_metrics() -> None:
    """``--list-metrics``: one line per registered metric (name, kind, direction, source)."""
    from gazeprep.evaluate.registry import get_metric, list_metrics

    for n in list_metrics():
        m = get_metric(n)
        typer.echo(f"{n:18s} {m.kind:10s} {'higher' if m.higher_is_better else 'lower'} is better  ({m.source})")


def _report(res: EvalResult, out: Path | None, pairs_out: Path | None) -> None:
    """The summary table and counts on stdout, then the optional summary / per-pair table files."""
    from gazeprep.evaluate import evaluator as E

    typer.echo(E.format_summary(res.summary))
    typer.echo(f"{res.pairs.height} pairs; {res.unpaired.height} maps without a partner")
    for note in res.notes:
        typer.echo(f"note: {note}")
    if out is not None:
        E.write_table(res.summary, out)
        typer.echo(f"wrote {out}")
    if pairs_out is not None:
        E.write_table(res.pairs, pairs_out)
        typer.echo(f"wrote {pairs_out}")


def _check_targets(export: Export, path: Path, targets: list[str]) -> None:
    """Usage error naming the export's targets when a ``--target`` is not one of them."""
    index = export.tables["heatmaps"] if "heatmaps" in export.tables else None
    known = sorted(index.get_column("target").unique().to_list()) if index is not None and index.height else []
    unknown = [t for t in targets if t not in known]
    if unknown:
        listed = ", ".join(known) if known else "none (the export holds no maps)"
        raise usage_error(f"{', '.join(map(repr, unknown))} not in {path}; its targets: {listed}", "--target")


def _overlays(value: str | None) -> tuple[str, ...]:
    """``--overlays``: comma-separated layer names, ``all`` or ``none`` (usage error otherwise)."""
    from gazeprep.evaluate.preview import parse_overlays

    try:
        return parse_overlays(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


# --- options of `gazeprep preview` ---

_PreviewExport = Annotated[Path, typer.Option("--export", help="Export folder to look at.")]
_Cases = Annotated[
    list[str] | None, typer.Option("--case", help="Case id (repeatable). Default with --html: every case.")
]
_Html = Annotated[
    bool,
    typer.Option(
        "--html",
        help="Write an HTML contact sheet (index.html): every case (rejected ones with their reason), thumbnails per case x target, one legend.",
    ),
]
_PreviewOut = Annotated[Path, typer.Option("--out", callback=out_folder, help="Output folder.")]
_Images = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="MIMIC-CXR(-JPG) root holding files/pXX/... (default: the bundled sample images, as `train`). A missing image is a warning naming its path, then a grey canvas.",
    ),
]
_PreviewTargets = Annotated[list[str] | None, typer.Option("--target", help="Only these targets (repeatable).")]
_Overlays = Annotated[
    str,
    typer.Option(
        "--overlays",
        callback=_overlays,
        metavar="LIST",
        help="Layers to draw, comma-separated: heatmap, fixations, ellipses, boxes, masks; or all / none (EGD-CXR's 17 anatomy boxes: add 'boxes').",
    ),
]
_PreviewPred = Annotated[
    Path | None,
    typer.Option(
        "--pred", help="A prediction export of the same cases: ground truth / prediction / difference side by side."
    ),
]
_AnatomyDir = Annotated[
    Path | None,
    typer.Option(
        "--anatomy-dir",
        help="Masks: `gazeprep anatomy predict` output (outlines of heart and lungs; anatomy recipes' masks), or the EGD-CXR release folder for its mask PNGs.",
    ),
]
_PanelSize = Annotated[int, typer.Option("--size", help="Longer side of each full-size PNG in pixels.", min=64)]
_SheetMaxCases = Annotated[
    int | None, typer.Option("--max-cases", help="With --html: only the first N cases (sorted ids).", min=1)
]


def preview_cmd(
    export: _PreviewExport,
    case: _Cases = None,
    html: _Html = False,
    out: _PreviewOut = Path("previews"),
    images: _Images = None,
    target: _PreviewTargets = None,
    overlays: _Overlays = "heatmap,fixations,ellipses,masks",
    pred: _PreviewPred = None,
    anatomy_dir: _AnatomyDir = None,
    size: _PanelSize = 640,
    max_cases: _SheetMaxCases = None,
    quiet: bool = quiet_option(),
) -> None:
    """Draw PNG overlays (X-ray, heatmap per target with a colour bar, numbered fixations, ellipses/boxes, masks, legend)."""
    from gazeprep.evaluate import preview as P

    ex = _open_export(export, "preview")
    pe = _open_export(pred, "prediction") if pred is not None else None
    if target:
        _check_targets(ex, export, target)

    def warn(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    if html:
        page = P.contact_sheet(
            ex,
            out,
            case_ids=list(case) if case else None,
            max_cases=max_cases,
            targets=target,
            images_root=images,
            full=size,
            anatomy_dir=anatomy_dir,
            overlays=overlays,
            pred=pe,
            progress=not quiet,
            warn=warn,
        )
        typer.echo(f"wrote {page}")
        return
    if not case:
        raise usage_error("give --case ID (repeatable), or --html for a contact sheet of the whole export", "--case")
    for cid in case:
        for p in P.preview_case(
            ex,
            cid,
            out,
            targets=target,
            images_root=images,
            size=size,
            anatomy_dir=anatomy_dir,
            overlays=overlays,
            pred=pe,
            warn=warn,
        ):
            typer.echo(f"wrote {p}")


# --- options of `gazeprep sweep-windows` ---

_SweepDatasetOpt = Annotated[
    SweepDataset, typer.Option("--dataset", help="Dataset (REFLACX: sentence timings and ellipses).")
]
_SweepRoot = Annotated[
    Path | None, typer.Option("--root", help="Release folder (default: the bundled sample_data/reflacx).")
]
_SweepStageOpt = Annotated[
    SweepStage,
    typer.Option("--stage", help="004 section 2.8 grid: '1' (start/end options), '2' (fine lags), 'both'."),
]
_SweepSize = Annotated[int, typer.Option("--size", help="Render and compare on an N x N letterboxed grid.", min=16)]
_Workers = Annotated[int, typer.Option("--workers", min=0, help="Processes (0 = all cores).")]
_SweepRecipe = Annotated[str, typer.Option("--recipe", help="Recipe whose window is varied (name or YAML path).")]
_SweepMaxCases = Annotated[int | None, typer.Option("--max-cases", help="Only the first N cases (sorted ids).", min=1)]
_Top = Annotated[int, typer.Option("--top", help="Rules to print.", min=1)]
_RankingOut = Annotated[
    Path | None,
    typer.Option("--out", callback=_table_path, help="Write the full ranking here (.parquet or .csv)."),
]
_RowsOut = Annotated[
    Path | None,
    typer.Option(
        "--rows-out", callback=_table_path, help="Write per (rule, case, label) IoU curves here (.parquet or .csv)."
    ),
]
_ExecutorOpt = Annotated[Executor, typer.Option("--executor", help="local (process pool) or ray.")]
_RayAddress = Annotated[
    str | None, typer.Option("--ray-address", help="Ray cluster address (default: start Ray here).")
]


def sweep_windows_cmd(
    dataset: _SweepDatasetOpt = SweepDataset.reflacx,
    root: _SweepRoot = None,
    stage: _SweepStageOpt = SweepStage.both,
    size: _SweepSize = 128,
    workers: _Workers = 0,
    recipe: _SweepRecipe = "reflacx-label-specific",
    max_cases: _SweepMaxCases = None,
    top: _Top = 20,
    out: _RankingOut = None,
    rows_out: _RowsOut = None,
    executor: _ExecutorOpt = Executor.local,
    ray_address: _RayAddress = None,
    quiet: bool = quiet_option(),
) -> None:
    """Rerun 004's window search: every start/end rule and lag vs the radiologists' ellipses, ranked by IoU."""
    from gazeprep.evaluate import evaluator as E
    from gazeprep.evaluate import sweep as S
    from gazeprep.paths import sample_data_dir

    root = root if root is not None else sample_data_dir() / dataset.value
    res = S.run_sweep(
        root,
        dataset=dataset.value,
        stage=stage.value,
        size=size,
        workers=workers,
        recipe=recipe,
        max_cases=max_cases,
        progress=not quiet,
        executor=executor.value,
        ray_address=ray_address,
    )
    typer.echo(S.format_ranking(res.ranking, top))
    typer.echo(
        f"{res.ranking.height} rules, {res.rows['case_id'].n_unique()} cases with ellipses; "
        f"thresholds validated per label on split: {res.ranking['split'][0]}"
    )
    default = res.ranking.filter(
        pl.col("rule").str.starts_with("max(sentence_start - 1.5 s, previous_sentence_start) -> last_mention")
    )
    base = res.ranking.filter(pl.col("rule") == S.BASELINE)
    if default.height and base.height:
        typer.echo(
            f"004 default rule: rank {default['rank'][0]} (IoU {default['iou'][0]:.3f}); "
            f"whole recording: rank {base['rank'][0]} (IoU {base['iou'][0]:.3f})"
        )
    if out is not None:
        E.write_table(res.ranking, out)
        typer.echo(f"wrote {out}")
    if rows_out is not None:
        E.write_table(res.rows, rows_out)
        typer.echo(f"wrote {rows_out}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("evaluate")(evaluate_cmd)
    app.command("preview")(preview_cmd)
    app.command("sweep-windows")(sweep_windows_cmd)
