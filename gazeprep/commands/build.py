"""``gazeprep build-heatmaps`` and ``gazeprep recipes``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gazeprep.commands import (
    Executor,
    hidden_alias,
    known_dataset,
    merge_alias,
    out_folder,
    progress_alias,
    quiet_option,
    release_root,
    show_progress,
)

if TYPE_CHECKING:
    from gazeprep.pipeline.build import BuildSummary

SHOWN_GROUPS = 8  # reject groups printed at the end of a build
SHOWN_ROWS = 5  # reject rows printed at the end of a build


class Dtype(str, Enum):
    """Storage dtype of the maps."""

    float16 = "float16"
    float32 = "float32"


def _parse_size(size: str | None) -> str | int | None:
    """Option callback: ``--size`` is an integer N >= 1 (N x N, letterboxed) or ``native``."""
    if size is None or size == "native":
        return size
    try:
        n = int(size)
    except ValueError:
        raise typer.BadParameter(f"{size!r} is not an integer >= 1 or 'native'") from None
    if n < 1:
        raise typer.BadParameter(f"{n} is not an integer >= 1 or 'native'")
    return n


def print_summary(summary: BuildSummary, *, show_rejects: bool = True) -> None:
    """The end-of-build report on stdout: the counts line, the rejects grouped by reason (with
    counts), the first few rejects with file and 1-based row, where the full table is, and the
    next command to run."""
    typer.echo(
        f"wrote {summary.out}: {summary.n_cases} cases, {summary.n_heatmaps} heatmaps, "
        f"{summary.n_rejects} rejects ({summary.n_reused} cases reused from a previous run)"
    )
    if summary.n_rejects and show_rejects:
        from gazeprep.export import load_export
        from gazeprep.export.inspect import format_reject_group, format_reject_row, rejects_summary

        s = rejects_summary(load_export(summary.out))
        typer.echo(
            f"rejected cases: {summary.n_rejected_cases} of {summary.n_live} "
            f"({summary.reject_fraction:.0%}; limit --max-reject-fraction {summary.max_reject_fraction:g})"
        )
        typer.echo(f"rejects by reason ({s.rows.height} rows in {s.groups.height} groups):")
        for g in s.groups.head(SHOWN_GROUPS).iter_rows(named=True):
            typer.echo("  " + format_reject_group(g))
        if s.groups.height > SHOWN_GROUPS:
            typer.echo(f"  ... and {s.groups.height - SHOWN_GROUPS} more groups")
        typer.echo("first rejects:")
        for row in s.rows.head(SHOWN_ROWS).iter_rows(named=True):
            typer.echo(f"  {format_reject_row(row)}")
        typer.echo(f"full rejects table: {s.table}")
    if summary.problem is not None:
        typer.echo(f"next: gazeprep rejects {summary.out}")
    else:
        typer.echo(f"next: gazeprep info {summary.out}")


def build_heatmaps_cmd(
    dataset: str = typer.Option(
        ...,
        "--dataset",
        callback=known_dataset,
        metavar="DATASET|FILE.yaml",
        help="reflacx or egd-cxr (see `gazeprep datasets`), or a dataset definition file (docs/datasets.md)",
    ),
    root: Path | None = typer.Option(None, "--root", help="Release folder (default: bundled sample data)"),
    recipe: str | None = typer.Option(None, "--recipe", help="Recipe name in pipelines/ or a YAML path"),
    out: Path | None = typer.Option(
        None, "--out", callback=out_folder, help="Output folder (default: out/<dataset>-<recipe>)"
    ),
    size: str | None = typer.Option(
        None,
        "--size",
        callback=_parse_size,
        metavar="N|native",
        help="Output size N (N x N, letterboxed, N >= 1) or 'native'",
    ),
    dtype: Dtype | None = typer.Option(None, "--dtype", help="Map storage (default: the recipe's)"),
    workers: int = typer.Option(0, "--workers", min=0, help="Worker processes (0 = all cores)"),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace an export built with another recipe, and recompute every case (ignore resumable parts)",
    ),
    max_reject_fraction: float = typer.Option(
        0.5,
        "--max-reject-fraction",
        min=0.0,
        max=1.0,
        help="Exit 1 (after writing the export) when more than this fraction of the cases is rejected",
    ),
    images: Path | None = typer.Option(
        None, "--images", help="MIMIC-CXR(-JPG) root: EGD-CXR image sizes from its DICOM headers or JPGs"
    ),
    mimic_root: Path | None = hidden_alias("--mimic-root"),
    images_root: Path | None = hidden_alias("--images-root"),
    anatomy_dir: Path | None = typer.Option(
        None, "--anatomy-dir", help="Masks written by `gazeprep anatomy predict` (anatomy recipes)"
    ),
    executor: Executor = typer.Option(Executor.local, "--executor", help="local (process pool) or ray"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (auto, ray://host:10001); default: start Ray here"
    ),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_alias(),
) -> None:
    """Build gaze heatmaps for a dataset with a recipe: Parquet tables + Zarr heatmaps + manifest.

    Exit status 1, after writing the export, when it holds no map or when more than
    --max-reject-fraction of its cases were rejected. One build per --out at a time.
    """
    from gazeprep.errors import GazeprepError
    from gazeprep.pipeline.build import BuildOptions, RejectPolicyError, build_heatmaps
    from gazeprep.recipes import load_recipe

    images = merge_alias(images, mimic_root, "--images", "--mimic-root")
    images = merge_alias(images, images_root, "--images", "--images-root")
    from gazeprep.datasets.registry import resolve_dataset

    adapter = resolve_dataset(dataset)  # a definition file is loaded and registered under its name
    definition = getattr(adapter, "definition_path", None)
    dataset = adapter.name
    recipe_name = recipe or adapter.default_recipe
    if recipe_name is None:
        raise GazeprepError(f"dataset {dataset!r} has no default recipe; give one with --recipe")
    root = release_root(root, definition, dataset, quiet)
    rec = load_recipe(recipe_name)
    rec = rec.with_overrides(size=size, dtype=dtype.value if dtype is not None else None)
    out = out or Path("out") / f"{dataset}-{rec.name}"
    opts = BuildOptions(
        dataset=dataset,
        root=root,
        out=out,
        recipe=rec,
        workers=workers,
        force=force,
        anatomy_dir=anatomy_dir,
        progress=show_progress(quiet, progress),
        executor=executor.value,
        ray_address=ray_address,
        max_reject_fraction=max_reject_fraction,
        images_root=images,
        definition=definition,
    )
    try:
        summary = build_heatmaps(opts)
    except RejectPolicyError as exc:
        print_summary(exc.summary)
        raise  # the CLI prints its one `error:` line and exits 1
    for ev in summary.extra.get("executor_events", []):
        typer.echo(f"retried block at {ev['block_start']} (attempt {ev['attempt']}): {ev['error']}", err=True)
    print_summary(summary)


def recipes_cmd() -> None:
    """List the recipes shipped in pipelines/."""
    from gazeprep.recipes import list_recipes, load_recipe

    for name in list_recipes():
        r = load_recipe(name)
        typer.echo(f"{name:28s} {r.dataset:8s} {r.description.splitlines()[0] if r.description else ''}")


def register(app: typer.Typer) -> None:
    """Add ``build-heatmaps`` and ``recipes`` to ``app``."""
    app.command("build-heatmaps")(build_heatmaps_cmd)
    app.command("recipes")(recipes_cmd)
