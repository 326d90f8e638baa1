"""Make ``import torchvision`` work with a CPU-only torch build.

The torchvision wheel on PyPI is built against CUDA torch. With the CPU build of torch its C++
extension (``torchvision/_C.so``) cannot load, so the operator schemas ``torchvision::nms`` and
``torchvision::qnms`` are never registered and ``import torchvision`` fails inside
``_meta_registrations.py`` with "operator torchvision::nms does not exist".

:func:`ensure_torchvision` defines those two schemas (definitions only, no kernels) *only when the
extension fails to load*, before torchvision is imported. Models, transforms and datasets then
work; the C++ operators themselves (nms, roi_align, image decoding) do not, so gazeprep reads images
with PIL/pydicom. Every module that imports torchvision, timm, segment_anything, open_clip,
segmentation_models_pytorch or pytorch_grad_cam calls this first.
"""

from __future__ import annotations

import importlib.util
import sys

_done = False


def _extension_loads() -> bool:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to patch, the import error will speak for itself
    import glob
    import os

    for location in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(location, "_C*.so")) + glob.glob(os.path.join(location, "_C*.pyd")):
            try:
                torch.ops.load_library(lib)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision() -> None:
    """Idempotently prepare the torchvision import (see module docstring)."""
    global _done
    if _done or "torchvision" in sys.modules:
        _done = True
        return
    import torch

    if not _extension_loads():
        try:
            torch.ops.torchvision.nms  # noqa: B018 - already defined by someone else
        except (AttributeError, RuntimeError):
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            # keep the library object alive for the life of the process
            globals()["_torchvision_library"] = lib
    _done = True
