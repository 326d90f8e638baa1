"""``gazeprep build-heatmaps`` and ``gazeprep recipes``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_RECIPE = {"reflacx": "reflacx-label-specific", "egd-cxr": "egd-static"}


def _parse_size(size: Optional[str]):
    if size is None:
        return None
    if size == "native":
        return "native"
    try:
        n = int(size)
    except ValueError:
        from gazeprep.errors import GazeprepError

        raise GazeprepError(f"--size must be an integer or 'native', got {size!r}") from None
    return n


def register(app: typer.Typer) -> None:
    @app.command("build-heatmaps")
    def build_heatmaps_cmd(
        dataset: str = typer.Option(..., "--dataset", help="reflacx or egd-cxr"),
        root: Optional[Path] = typer.Option(None, "--root", help="Release folder (default: bundled sample data)"),
        recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe name in pipelines/ or a YAML path"),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: out/<dataset>-<recipe>)"),
        size: Optional[str] = typer.Option(None, "--size", help="Output size N (N x N, letterboxed) or 'native'"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float16 or float32 (default: the recipe's)"),
        workers: int = typer.Option(0, "--workers", help="Worker processes (0 = all cores)"),
        force: bool = typer.Option(False, "--force", help="Recompute every case, ignoring resumable parts"),
        anatomy_dir: Optional[Path] = typer.Option(
            None, "--anatomy-dir", help="Masks written by `gazeprep anatomy predict` (anatomy recipes)"
        ),
        executor: str = typer.Option("local", "--executor", help="local (process pool) or ray"),
        ray_address: Optional[str] = typer.Option(
            None, "--ray-address", help="Ray cluster address (auto, ray://host:10001); default: start Ray here"
        ),
    ) -> None:
        """Build gaze heatmaps for a dataset with a recipe: Parquet tables + Zarr heatmaps + manifest."""
        from gazeprep.paths import sample_data_dir
        from gazeprep.pipeline.build import BuildOptions, build_heatmaps
        from gazeprep.recipes import load_recipe

        if dataset not in DEFAULT_RECIPE:
            from gazeprep.errors import GazeprepError

            raise GazeprepError(f"--dataset must be one of {sorted(DEFAULT_RECIPE)}, got {dataset!r}")
        if root is None:
            root = sample_data_dir() / dataset
            typer.echo(f"no --root given: using the bundled synthetic sample data in {root}", err=True)
        rec = load_recipe(recipe or DEFAULT_RECIPE[dataset])
        rec = rec.with_overrides(size=_parse_size(size), dtype=dtype)
        out = out or Path("out") / f"{dataset}-{rec.name}"
        summary = build_heatmaps(
            BuildOptions(
                dataset=dataset,
                root=root,
                out=out,
                recipe=rec,
                workers=workers,
                force=force,
                anatomy_dir=anatomy_dir,
                executor=executor,
                ray_address=ray_address,
            )
        )
        for ev in summary.extra.get("executor_events", []):
            typer.echo(f"retried block at {ev['block_start']} (attempt {ev['attempt']}): {ev['error']}", err=True)
        typer.echo(
            f"wrote {summary.out}: {summary.n_cases} cases, {summary.n_heatmaps} heatmaps, "
            f"{summary.n_rejects} rejects ({summary.n_reused} cases reused from a previous run)"
        )

    @app.command("recipes")
    def recipes_cmd() -> None:
        """List the recipes shipped in pipelines/."""
        from gazeprep.recipes import list_recipes, load_recipe

        for name in list_recipes():
            r = load_recipe(name)
            typer.echo(f"{name:28s} {r.dataset:8s} {r.description.splitlines()[0] if r.description else ''}")
