"""Deterministic synthetic releases of REFLACX, EGD-CXR and MIMIC-CXR(-JPG) with known ground truth.

The files follow the real release layouts byte for byte (``shared/reference/FORMATS.md``); the
returned truth objects (:mod:`gazeprep.synth.truth`) hold every value as written plus what it means
(findings, their regions, the sentence that mentions them, where the eyes were aimed).

* :func:`generate_mimic` - MIMIC-CXR root: DICOM + JPG phantoms and the 4 ``.csv.gz`` tables.
* :func:`generate_reflacx` - REFLACX release (optionally on the images of a MIMIC root).
* :func:`generate_egd` - EGD-CXR release (optionally on the images of a MIMIC root).
* :func:`phantom_masks` - the anatomy masks of a phantom (also used by the anatomy area).

The phantom behind an image depends only on its dicom id: ``params, findings =
params_for_image(dicom_id)``; ``phantom_masks(params, H, W)`` then gives the exact masks that the
EGD-CXR PNGs hold and that the rendered DICOM/JPG show, and ``region_boxes(params, H, W)`` the named
anatomical boxes (EGD ``bounding_boxes.csv`` names and the regions findings are placed in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gazeprep.synth.phantom import (
    PhantomParams,
    chest_box,
    params_for_image,
    phantom_masks,
    region_boxes,
    render_phantom,
)
from gazeprep.synth.reflacx import generate_reflacx
from gazeprep.synth.truth import (
    EgdCalibration,
    EgdCase,
    Ellipse,
    Mention,
    MimicImage,
    ReflacxCase,
    Sentence,
    SynthEgd,
    SynthMimic,
    SynthReflacx,
)

__all__ = [
    "EgdCalibration",
    "EgdCase",
    "Ellipse",
    "Mention",
    "MimicImage",
    "PhantomParams",
    "ReflacxCase",
    "Sentence",
    "SynthEgd",
    "SynthMimic",
    "SynthReflacx",
    "chest_box",
    "generate_egd",
    "generate_mimic",
    "generate_reflacx",
    "params_for_image",
    "phantom_masks",
    "region_boxes",
    "render_phantom",
]


def __getattr__(name: str) -> Callable[..., Any]:  # lazy: generators with heavier imports (pydicom, PIL)
    if name == "generate_mimic":
        from gazeprep.synth.mimic import generate_mimic

        return generate_mimic
    if name == "generate_egd":
        from gazeprep.synth.egd import generate_egd

        return generate_egd
    raise AttributeError(name)
