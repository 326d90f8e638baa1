"""Export: Parquet tables + Zarr v3 heatmaps + ``manifest.json``, atomic, resumable, reproducible.

Build side::

    store = PartStore(out, recipe.hash(), dtype=recipe.output.dtype)
    # in each worker, per case:
    if store.has(case_id, h): skip  else: store.put(CaseResult(case_id, h, tables, maps, rejects))
    # once all cases are done:
    finalize(out, store, recipe=recipe, case_ids=all_ids, extra_tables=..., manifest_extra=...)

Read side::

    ex = load_export(out)            # refuses an export whose build did not commit
    ex.tables["heatmaps"]            # polars index: case_id, target, array, row, ...
    ex.heatmap(case_id, "full")      # float32 (H, W)

See :mod:`gazeprep.export.layout` for the files and :mod:`gazeprep.export.writer` for the guarantees.
"""

from __future__ import annotations

from gazeprep.export.layout import array_name
from gazeprep.export.parts import PartStore
from gazeprep.export.predictions import write_prediction_export
from gazeprep.export.reader import Export, load_export
from gazeprep.export.results import CaseResult, hash_inputs
from gazeprep.export.writer import finalize

__all__ = [
    "CaseResult",
    "Export",
    "PartStore",
    "array_name",
    "finalize",
    "hash_inputs",
    "load_export",
    "write_prediction_export",
]
