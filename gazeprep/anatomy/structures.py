"""Anatomical structures handled by the anatomy stage (no torch here).

The SAMed model predicts one label map with :data:`CLASSES` (channel 0 = background). EGD-CXR ships
one PNG per structure in ``audio_segmentation_transcripts/<dicom_id>/``; the mediastinum file is
misspelled ``mediastanum.png`` on disk (FORMATS.md 2.1), both spellings are accepted.

Where EGD masks overlap, the label map gives the later structure of :data:`STRUCTURES` priority
(the small aortic knob is drawn over the mediastinum).
"""

from __future__ import annotations

STRUCTURES: tuple[str, ...] = ("left_lung", "right_lung", "mediastinum", "aortic_knob")
CLASSES: tuple[str, ...] = ("background", *STRUCTURES)
DERIVED_STRUCTURES: tuple[str, ...] = ("heart",)  # heart = mediastinum with its top part cut
ALL_STRUCTURES: tuple[str, ...] = STRUCTURES + DERIVED_STRUCTURES

# file names tried in order, per structure, in an EGD-CXR case folder
EGD_MASK_FILES: dict[str, tuple[str, ...]] = {
    "left_lung": ("left_lung.png",),
    "right_lung": ("right_lung.png",),
    "mediastinum": ("mediastanum.png", "mediastinum.png"),
    "aortic_knob": ("aortic_knob.png",),
}
