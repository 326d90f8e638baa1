"""CLI: ``gazeprep ingest`` (release folder -> canonical Parquet tables) and ``gazeprep datasets``."""

from __future__ import annotations

from pathlib import Path

import typer

from gazeprep.commands import hidden_alias, known_dataset, merge_alias, out_folder, quiet_option


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``datasets`` to ``app``."""

    @app.command("ingest")
    def ingest_cmd(
        dataset: str = typer.Option(
            ...,
            "--dataset",
            callback=known_dataset,
            metavar="DATASET",
            help="Registered dataset name (see `gazeprep datasets`) or a dataset definition file (.yaml).",
        ),
        root: Path | None = typer.Option(
            None, "--root", help="Release folder. Default: the bundled sample_data/<dataset>."
        ),
        out: Path = typer.Option(..., "--out", callback=out_folder, help="Output folder for the Parquet tables."),
        gaze_samples: bool = typer.Option(
            False, "--gaze-samples", help="Also read the raw tracker samples (gaze.csv / eye_gaze.csv; large)."
        ),
        images: Path | None = typer.Option(
            None,
            "--images",
            help="MIMIC-CXR(-JPG) root: adds CheXpert/NegBio labels (and EGD-CXR image sizes and split).",
        ),
        mimic_root: Path | None = hidden_alias("--mimic-root"),
        workers: int = typer.Option(1, "--workers", min=1, help="Worker processes for reading cases."),
        quiet: bool = quiet_option(),
    ) -> None:
        """Read a release folder and write its canonical tables (cases, fixations, words, ...) and rejects as Parquet."""
        from gazeprep.datasets.registry import resolve_dataset
        from gazeprep.datasets.writer import ingest
        from gazeprep.paths import sample_data_dir

        images = merge_alias(images, mimic_root, "--images", "--mimic-root")
        adapter = resolve_dataset(dataset)  # a definition file is loaded and registered under its name
        dataset = adapter.name
        definition = getattr(adapter, "definition_path", None)
        if root is None and definition is not None:
            root = definition.parent
            typer.echo(f"--root not given: using the definition's folder {root}", err=True)
        if root is None:
            root = sample_data_dir() / dataset
            typer.echo(f"--root not given: using the bundled sample data {root}", err=True)
        kwargs = {"mimic_root": images} if images is not None else {}
        counts = ingest(dataset, root, out, gaze_samples=gaze_samples, workers=workers, progress=not quiet, **kwargs)
        summary = ", ".join(f"{name} {n}" for name, n in counts.items())
        typer.echo(f"wrote {out}: {summary}")

    @app.command("datasets")
    def datasets_cmd() -> None:
        """List the registered datasets."""
        from gazeprep.datasets import get_adapter, list_datasets

        for name in list_datasets():
            typer.echo(f"{name:<10} {get_adapter(name).description}")
