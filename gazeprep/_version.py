"""The package version, in a leaf module that imports nothing from gazeprep.

Modules inside the package read the version from here (``from gazeprep._version import
__version__``), never through ``import gazeprep``: the package ``__init__`` lazily imports
:mod:`gazeprep.export`, so reading the version through it would close an import cycle.
"""

from __future__ import annotations

__version__ = "0.1.0"
