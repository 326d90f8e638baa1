"""Package data of an installed wheel: ``rules/`` and ``pipelines/`` (copies of the repository's
top-level folders, mapped in by ``pyproject.toml``). In a source checkout this folder holds only this
file; :mod:`gazeprep.paths` then reads the top-level folders."""
