"""gazeprep: gaze ground truth for chest X-ray eye-tracking datasets.

The package is a staged ETL::

    raw release folders -> ingest (gazeprep.datasets) -> canonical tables (gazeprep.schema)
    -> text (gazeprep.text: sentences, mentions, windows) -> anatomy (gazeprep.anatomy)
    -> render (gazeprep.heatmaps) -> export (gazeprep.export) -> train / evaluate

Heavy dependencies (torch, segment-anything) are imported only inside ``gazeprep.train`` and
``gazeprep.anatomy``.
"""

from __future__ import annotations

from typing import Any

from gazeprep._version import __version__
from gazeprep.errors import GazeprepError

__all__ = ["GazeprepError", "__version__", "load_export"]


def __getattr__(name: str) -> Any:  # lazy public API, keeps `import gazeprep` cheap
    if name == "load_export":
        from gazeprep.export import load_export

        return load_export
    raise AttributeError(f"module 'gazeprep' has no attribute {name!r}")
