"""Anatomical structures handled by the anatomy stage (no torch here).

The SAMed model predicts one label map with :data:`CLASSES` (channel 0 = background). Which files
hold a release's own masks is its adapter's knowledge (:meth:`gazeprep.datasets.base.DatasetAdapter.mask_files`;
EGD-CXR: one PNG per structure, file names in :data:`gazeprep.datasets.egd.MASK_FILES`).

Where masks overlap, the label map gives the later structure of :data:`STRUCTURES` priority
(the small aortic knob is drawn over the mediastinum).
"""

from __future__ import annotations

STRUCTURES: tuple[str, ...] = ("left_lung", "right_lung", "mediastinum", "aortic_knob")
CLASSES: tuple[str, ...] = ("background", *STRUCTURES)
DERIVED_STRUCTURES: tuple[str, ...] = ("heart",)  # heart = mediastinum with its top part cut
ALL_STRUCTURES: tuple[str, ...] = STRUCTURES + DERIVED_STRUCTURES
