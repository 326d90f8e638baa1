"""Running the per-case stage functions on Ray (``--executor ray``).

The Ray executor is :class:`gazeprep.pipeline.executor.RayExecutor`, one implementation of the
executor interface every command uses (the local process pool is the other): a Ray task processes a
*block* of case ids with the same per-block function as the pool (for a build,
:func:`gazeprep.pipeline.build.build_block`), which writes the same resumable parts through the
same atomic writer, so a Ray build is byte-identical to a local one.

Fault tolerance (see :mod:`gazeprep.pipeline.executor`): Ray restarts tasks whose worker process
died; a block that raises is resubmitted, then split into single cases; a case failing every
attempt becomes a ``rejects`` row; an I/O fault or running out of memory stops the run at once;
a rerun resumes from the parts already written.

Start a local cluster with ``ray start --head`` (or let gazeprep call ``ray.init()`` in-process when
no address is given); point at an existing one with ``--ray-address ray://host:10001`` or
``--ray-address auto``.

This module only names the Ray pieces; it imports nothing from :mod:`gazeprep.pipeline.build`
(imports in ``pipeline/`` go one way: build -> case, executor).
"""

from __future__ import annotations

from gazeprep.pipeline.executor import FAULT_ENV, BlockRun, RayExecutor

__all__ = ["FAULT_ENV", "BlockRun", "RayExecutor"]
