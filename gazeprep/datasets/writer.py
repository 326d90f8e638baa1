"""``ingest``: open a release, read every case and write the canonical tables as Parquet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from gazeprep import schema
from gazeprep._atomic import atomic_write_parquet
from gazeprep.datasets.base import CaseData, Release
from gazeprep.datasets.registry import get_adapter

_RELEASE: Release | None = None  # the release in a worker process (set by _init_worker)


def _init_worker(release: Release) -> None:
    global _RELEASE
    _RELEASE = release


def _read(case_id: str) -> CaseData:
    assert _RELEASE is not None
    return _RELEASE.read_case(case_id)


def ingest(
    adapter_name: str,
    root: str | Path,
    out: str | Path,
    gaze_samples: bool = False,
    *,
    workers: int = 1,
    progress: bool = True,
    **open_kwargs: Any,
) -> dict[str, int]:
    """Ingest one release folder into Parquet tables.

    Parameters
    ----------
    adapter_name:
        Registered dataset name (``reflacx``, ``egd-cxr``, ``mimic-cxr``).
    root:
        The release folder.
    out:
        Output folder; receives ``cases.parquet``, ``case_labels.parquet``, one file per per-case
        table of the dataset (``fixations``, ``reports``, ``words``, ...) and ``rejects.parquet``,
        each zstd-compressed and conforming to :data:`gazeprep.schema.TABLES`.
    gaze_samples:
        Also read the raw tracker samples (``gaze_samples.parquet``; large).
    workers:
        Worker processes for reading cases (spawned; the release is pickled into each); 1 reads
        in this process.
    progress:
        Show a tqdm progress bar on stderr.
    open_kwargs:
        Passed to the adapter's ``open`` (e.g. ``images_root``, the MIMIC-CXR root).

    Returns
    -------
    dict
        Row count of every written table (name -> rows).
    """
    adapter = get_adapter(adapter_name)
    release = adapter.open(Path(root), gaze_samples=gaze_samples, **open_kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[pl.DataFrame]] = {t: [] for t in release.tables}
    rejects: list[dict] = list(release.rejects)
    ids = release.case_ids()
    bar = tqdm(total=len(ids), desc=f"ingest {adapter_name}", unit="case", disable=not progress, file=sys.stderr)
    if workers > 1 and len(ids) > 1:
        import multiprocessing as mp

        # spawn, not fork: polars deadlocks in a forked child once the parent has used its thread
        # pool (every collect() hangs). The release is pickled once into each worker.
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(release,)) as pool:
            for cd in pool.imap(_read, ids, chunksize=16):
                _collect(cd, parts, rejects)
                bar.update(1)
    else:
        for cid in ids:
            _collect(release.read_case(cid), parts, rejects)
            bar.update(1)
    bar.close()
    counts: dict[str, int] = {}
    tables = {"cases": release.cases, "case_labels": release.case_labels}
    for name, frames in parts.items():
        tables[name] = pl.concat(frames, how="vertical") if frames else schema.empty(name)
    tables["rejects"] = schema.rejects_frame(rejects)
    for name, df in tables.items():
        df = schema.conform(df, name)
        atomic_write_parquet(df, out / f"{name}.parquet")  # a killed run leaves no half file
        counts[name] = df.height
    return counts


def _collect(cd: CaseData, parts: dict[str, list[pl.DataFrame]], rejects: list[dict]) -> None:
    for name, df in cd.tables.items():
        if df.height:
            parts.setdefault(name, []).append(df)
    rejects.extend(cd.rejects)
