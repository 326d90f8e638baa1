"""CLI: ``gazeprep ingest`` (release folder -> canonical Parquet tables) and ``gazeprep datasets``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``datasets`` to ``app``."""

    @app.command("ingest")
    def ingest_cmd(
        dataset: str = typer.Option(..., "--dataset", help="Registered dataset name (see `gazeprep datasets`)."),
        root: Optional[Path] = typer.Option(
            None, "--root", help="Release folder. Default: the bundled sample_data/<dataset>."
        ),
        out: Path = typer.Option(..., "--out", help="Output folder for the Parquet tables."),
        gaze_samples: bool = typer.Option(
            False, "--gaze-samples", help="Also read the raw tracker samples (gaze.csv / eye_gaze.csv; large)."
        ),
        mimic_root: Optional[Path] = typer.Option(
            None,
            "--mimic-root",
            help="MIMIC-CXR(-JPG) folder: adds CheXpert/NegBio labels (and EGD-CXR image sizes and split).",
        ),
        workers: int = typer.Option(1, "--workers", min=1, help="Worker processes for reading cases."),
    ) -> None:
        """Read a release folder and write its canonical tables (cases, fixations, words, ...) and rejects as Parquet."""
        from gazeprep.datasets import get_adapter
        from gazeprep.datasets.writer import ingest
        from gazeprep.paths import sample_data_dir

        get_adapter(dataset)  # unknown names fail before anything else
        if root is None:
            root = sample_data_dir() / dataset
            typer.echo(f"--root not given: using the bundled sample data {root}", err=True)
        kwargs = {"mimic_root": mimic_root} if mimic_root is not None else {}
        counts = ingest(dataset, root, out, gaze_samples=gaze_samples, workers=workers, **kwargs)
        summary = ", ".join(f"{name} {n}" for name, n in counts.items())
        typer.echo(f"wrote {out}: {summary}")

    @app.command("datasets")
    def datasets_cmd() -> None:
        """List the registered datasets."""
        from gazeprep.datasets import get_adapter, list_datasets

        for name in list_datasets():
            typer.echo(f"{name:<10} {get_adapter(name).description}")
