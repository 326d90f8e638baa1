"""Dataset ingest: adapters that turn raw release folders into the canonical tables.

Public API::

    from gazeprep.datasets import get_adapter, list_datasets, register_dataset, ingest
    release = get_adapter("reflacx").open(root)
    case = release.read_case(release.case_ids()[0])
    ingest("reflacx", root, out)          # all canonical tables as Parquet under out/
"""

from gazeprep.datasets.base import CaseData, DatasetAdapter, Release
from gazeprep.datasets.registry import get_adapter, list_datasets, register_dataset
from gazeprep.datasets.writer import ingest

__all__ = ["CaseData", "DatasetAdapter", "Release", "get_adapter", "list_datasets", "register_dataset", "ingest"]
