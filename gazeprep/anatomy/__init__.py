"""Anatomy masks (paper 000): SAMed fine-tuned on EGD-CXR, predicted for REFLACX, heart from the
mediastinum, manual overrides.

Torch-free entry points (importing this package does not import torch):

* :func:`load_anatomy_masks` - ``{structure: bool (H, W)}`` of one image at its original size, for
  ``render_case(..., masks=...)``;
* :class:`AnatomyMasks` - the same per recipe target, configured by a recipe's ``anatomy`` section;
* :func:`masks_table` / :func:`release_masks_table` - rows of the canonical ``masks`` table;
* :func:`heart_from_mediastinum`, :class:`MissingMaskError`.

The model (:mod:`gazeprep.anatomy.model`), training (:mod:`gazeprep.anatomy.train`) and inference
(:mod:`gazeprep.anatomy.predict`) modules import torch; the mask store is :mod:`gazeprep.anatomy.store`,
the paper's classification settings and splits :mod:`gazeprep.anatomy.splits`.
"""

from gazeprep.anatomy.masks import (
    AnatomyMasks,
    MissingMaskError,
    heart_from_mediastinum,
    load_anatomy_masks,
    load_egd_anatomy_masks,
    load_release_anatomy_masks,
    masks_table,
    release_masks_table,
)

__all__ = [
    "AnatomyMasks",
    "MissingMaskError",
    "heart_from_mediastinum",
    "load_anatomy_masks",
    "load_egd_anatomy_masks",
    "load_release_anatomy_masks",
    "masks_table",
    "release_masks_table",
]
