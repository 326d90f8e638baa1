"""Image identities for REFLACX / EGD-CXR generation: read from a generated MIMIC root or invented."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from gazeprep.errors import GazeprepError
from gazeprep.synth.io import dicom_ids

__all__ = ["ImageRef", "invent_images", "load_mimic_images", "read_mimic_table", "split_for_subject"]


@dataclass(frozen=True)
class ImageRef:
    """A frontal MIMIC-CXR image: ids, size (H = Rows, W = Columns) and official split."""

    dicom_id: str
    subject_id: int
    study_id: int
    height: int
    width: int
    split: str

    @property
    def rel_path(self) -> str:
        """``files/pXX/p<subject>/s<study>/<dicom_id>.dcm`` (MIMIC-CXR layout)."""
        s = str(self.subject_id)
        return f"files/p{s[:2]}/p{s}/s{self.study_id}/{self.dicom_id}.dcm"


def read_mimic_table(root: Path, stem: str) -> pl.DataFrame:
    """Read ``<stem>.csv.gz`` (or ``.csv``) of a MIMIC root as all-string columns."""
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        p = root / name
        if p.exists():
            data = p.read_bytes()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            return pl.read_csv(io.BytesIO(data), infer_schema_length=0)
    raise GazeprepError(
        f"{root}: no {stem}.csv(.gz) - is this a MIMIC-CXR root (see `gazeprep synth --dataset mimic-cxr`)?"
    )


def load_mimic_images(root: str | Path) -> list[ImageRef]:
    """Frontal (PA/AP) images listed in ``mimic-cxr-2.0.0-metadata.csv(.gz)`` of ``root`` whose
    ``.dcm`` exists, with the split from ``mimic-cxr-2.0.0-split.csv(.gz)``, in metadata order."""
    root = Path(root)
    meta = read_mimic_table(root, "mimic-cxr-2.0.0-metadata")
    split = read_mimic_table(root, "mimic-cxr-2.0.0-split")
    split_of = dict(zip(split["dicom_id"].to_list(), split["split"].to_list()))
    out = []
    for row in meta.iter_rows(named=True):
        if row["ViewPosition"] not in ("PA", "AP"):
            continue
        ref = ImageRef(
            row["dicom_id"],
            int(row["subject_id"]),
            int(row["study_id"]),
            int(row["Rows"]),
            int(row["Columns"]),
            split_of.get(row["dicom_id"], "train"),
        )
        if (root / ref.rel_path).exists():
            out.append(ref)
    if not out:
        raise GazeprepError(f"{root}: no frontal images with DICOM files found")
    return out


def split_for_subject(subject_id: int) -> str:
    """Patient-disjoint split of a subject (about 92 % train, 3 % validate, 5 % test)."""
    r = (subject_id * 2654435761) % 1000
    return "train" if r < 920 else "validate" if r < 950 else "test"


def invent_images(rng: np.random.Generator, n: int) -> list[ImageRef]:
    """``n`` images with realistic MIMIC sizes (portrait ~W 2300-2600 x H 2800-3100, 15 % landscape),
    ids and subjects (some subjects with two studies); no files are written for them."""
    ids = dicom_ids(rng, n)
    n_subj = max(1, int(np.ceil(n * 0.8)))
    subjects = rng.choice(np.arange(10_000_000, 20_000_000), size=n_subj, replace=False)
    subj = subjects[rng.integers(0, n_subj, n)]
    studies = rng.choice(np.arange(50_000_000, 60_000_000), size=n, replace=False)
    land = rng.random(n) < 0.15
    a = rng.integers(2800, 3101, n)
    b = rng.integers(2300, 2601, n)
    out = []
    for i in range(n):
        h, w = (int(b[i]), int(a[i])) if land[i] else (int(a[i]), int(b[i]))
        s = int(subj[i])
        out.append(ImageRef(ids[i], s, int(studies[i]), h, w, split_for_subject(s)))
    return out
